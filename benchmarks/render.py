"""The GPU report's report.md: report.json's stages as markdown tables."""

from __future__ import annotations

from typing import Any, Callable


def _device(report: dict[str, Any]) -> str:
  for stage in report["stages"].values():
    result = stage.get("result") or {}
    if "environment" in result:
      return result["environment"]["device"]
    for run in [result.get("run")] + list(
        (result.get("runs") or {}).values() if isinstance(result.get("runs"), dict) else []
    ):
      if run and run.get("device"):
        return run["device"]
  return "unknown"


def _epochs(n: int) -> str:
  return f"{n} epoch{'s' if n != 1 else ''}"


def _f(value, spec: str = ".1f", suffix: str = "") -> str:
  return "-" if value is None else f"{value:{spec}}{suffix}"


def _run_row(label: str, run: dict[str, Any] | None) -> str:
  if not run or "params_sha256" not in run:
    return f"| {label} | - | - | - | - | - | - | - |"
  return (
      f"| {label} | {run['model']} | {run['epochs']} | {run['dtype']} | "
      f"{_f(run['test_accuracy'], '.2f', '%')} | {_f(run['process_wall_s'], '.0f', ' s')} | "
      f"{_f(run['train_wall_s'], '.0f', ' s')} | {_f(run['img_per_s'], ',.0f')} | "
      f"`{run['params_sha256'][:16]}` |"
  )


_RUN_HEADER = [
    "| run | model | epochs | dtype | test acc | wall (process) | train wall | "
    "img/s (steady) | params_sha256 |",
    "|---|---|---:|---|---:|---:|---:|---:|---|",
]


def _stage_note(stage: dict[str, Any]) -> str:
  return {
      "failed": f"FAILED: {stage.get('error', '')}",
      "timed_out": f"STOPPED (time limit): {stage.get('error', '')}",
      "skipped": f"skipped: {stage.get('error', '')}",
      "pending": "not run yet",
  }.get(stage["status"], "")


def render_markdown(report: dict[str, Any]) -> str:
  stages = report["stages"]
  env = report["environment"]
  versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
  lines = [
      "# nkd GPU report",
      "",
      f"`{report['command']}` on **{_device(report)}**, {report['started']}; "
      f"{report['wall_time_s']:.0f} s in all"
      + (f" (limit {report['time_limit_s']:.0f} s)" if report["time_limit_s"] else "")
      + f". Python {env['python']}; {versions}.",
      "",
  ]
  if report["quick"]:
    lines += [
        "**QUICK**: tiny models (WRN-10-1), 1-2 epochs, 512 training images: the code "
        "paths of the full report; the numbers mean nothing.",
        "",
    ]
  data = report["data"]
  lines += [
      f"Data: {data.get('label', 'synthetic')}"
      + (f", first {data['train_subset']} training images" if data.get("train_subset") else "")
      + (f" (converted in {data['convert_s']:.0f} s)" if "convert_s" in data else "")
      + ".",
      "",
      "## Stages",
      "",
      "| stage | status | time | budget | note |",
      "|---|---|---:|---:|---|",
  ]
  for name in report["stage_order"]:
    stage = stages[name]
    over = (stage.get("wall_time_s") or 0) > stage["budget_s"]
    lines.append(
        f"| {name} | {stage['status']} | {_f(stage.get('wall_time_s'), '.0f', ' s')} | "
        f"{stage['budget_s']} s{' (over)' if over else ''} | {_stage_note(stage)} |"
    )

  def section(name: str, title: str, body: Callable[[dict[str, Any]], list[str]]) -> None:
    stage = stages.get(name, {})
    lines.extend(["", f"## {title}", ""])
    result = stage.get("result")
    if result and (
        stage.get("status") == "ok" or (name == "sweep" and "aggregate_img_per_s_steady" in result)
    ):
      lines.extend(body(result))
    if stage.get("status") not in ("ok", None):
      lines.append(f"{_stage_note(stage)}")

  def bench_body(r):
    out = ["| row | img/s | torch img/s | jax / torch |", "|---|---:|---:|---:|"]
    for row, v in r["rows"].items():
      out.append(
          f"| `{row}` | {_f(v['img_per_s'], ',.1f')} | {_f(v['torch_img_per_s'], ',.1f')} "
          f"| {_f(v['jax_over_torch'], '.2f', 'x')} |"
      )
    out += [
        "",
        f"PyTorch: {r['torch_version']}"
        if r["torch_version"] and not r["torch_error"]
        else f"PyTorch reference: {r['torch_error']}",
        "",
        f"Full results: `{r['json']}` (log `{r['process']['log']}`).",
    ]
    return out

  def real_body(_):
    out = list(_RUN_HEADER)
    for name, label in (
        ("teacher", "teacher"),
        ("student", "student alone"),
        ("kd", "Hinton KD student"),
    ):
      out.append(_run_row(label, ((stages.get(name) or {}).get("result") or {}).get("run")))
    return out

  def sweep_body(r):
    out = [
        "| run | status | test acc | wall (process) | img/s (steady) |",
        "|---|---|---:|---:|---:|",
    ]
    for run in r["runs"]:
      out.append(
          f"| {run['name']} | {run['status']} | {_f(run.get('test_accuracy'), '.2f', '%')} "
          f"| {_f(run['process_wall_s'], '.0f', ' s')} "
          f"| {_f(run.get('img_per_s'), ',.0f')} |"
      )
    out += [
        "",
        f"{len(r['runs'])} runs, {r['parallel']} at a time, {r['wall_time_s']:.0f} s: "
        f"aggregate **{_f(r['aggregate_img_per_s_steady'], ',.0f')} img/s** steady (the sum "
        f"of the runs' steady rates: exact while their steady epochs overlap, high where "
        f"they do not), {_f(r['aggregate_img_per_s_end_to_end'], ',.0f')} img/s end to end "
        f"({r['images']:,} images over the sweep's wall time, start-up and compilation "
        f"included).",
    ]
    if r.get("speedup_over_one_run"):
      out.append(
          f"One KD run alone (stage kd): {r['single_run_img_per_s']:,.0f} img/s, so "
          f"{r['parallel']} at once give {r['speedup_over_one_run']:.2f}x."
      )
    return out

  def determinism_body(r):
    out = list(_RUN_HEADER)
    out += [
        _run_row(f"{name} (--{'' if run['gpu_deterministic'] else 'no'}gpu_deterministic)", run)
        for name, run in r["runs"].items()
    ]
    out += [
        "",
        f"The two deterministic runs' params_sha256: **"
        f"{'equal' if r['deterministic_hashes_equal'] else 'DIFFERENT'}**. Without "
        f"deterministic ops: params_sha256 "
        f"{'equal' if r['nondeterministic_hash_equal'] else 'differs'}; "
        f"{r['nondeterministic_img_per_s']:,.0f} against {r['deterministic_img_per_s']:,.0f} "
        f"img/s (steady), so **{100 * r['time_saved']:.1f}%** of the training time saved "
        f"(negative: lost).",
    ]
    if r["note"]:
      out += ["", f"Note: {r['note']}."]
    return out

  def bf16_body(r):
    out = list(_RUN_HEADER)
    fp32 = ((stages.get("student") or {}).get("result") or {}).get("run")
    out += [_run_row("float32 (stage student)", fp32), _run_row("bfloat16", r["run"])]
    if "accuracy_difference" in r:
      out += [
          "",
          f"bfloat16 - float32: {r['accuracy_difference']:+.2f} points of test accuracy; "
          f"train wall time x{r['train_wall_ratio']:.2f}, steady img/s "
          f"x{_f(r['img_per_s_ratio'], '.2f')}.",
      ]
    return out

  section("bench", "Benchmark rows (benchmarks.bench)", bench_body)
  lines += [
      "",
      f"## Teacher, student, KD: {data.get('label', 'synthetic data')}, "
      f"{_epochs(report['sizes']['epochs'])}, cosine",
      "",
  ]
  lines += real_body(None)
  for name in ("teacher", "student", "kd"):
    if stages.get(name, {}).get("status") not in ("ok", None):
      lines.append(f"\n{name}: {_stage_note(stages[name])}")
  sizes = report["sizes"]
  section(
      "sweep",
      f"Sweep: {len(sizes['sweep_seeds'])} KD runs at once (nkd.sweep "
      f"--parallel={len(sizes['sweep_seeds'])}, {_epochs(sizes['sweep_epochs'])})",
      sweep_body,
  )
  section(
      "determinism",
      f"Determinism (student alone, {_epochs(sizes['determinism_epochs'])})",
      determinism_body,
  )
  section(
      "bf16", f"bfloat16 against float32 (student alone, {_epochs(sizes['epochs'])})", bf16_body
  )
  lines += [
      "",
      "Wall (process): the child process from start to exit (JAX start-up, data, "
      "compilation, training, evaluation). Train wall: results.json's wall_time_s. "
      "img/s (steady): the median of metrics.jsonl's per-epoch rates after the first "
      "epoch (which compiles). Logs: DIR/logs/; runs: DIR/runs/ and "
      "DIR/workspace/sweeps/.",
  ]
  return "\n".join(lines) + "\n"
