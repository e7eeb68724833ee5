"""The GPU report (`python -m benchmarks.bench --report=DIR`): runs its stages (bench, teacher,
student, kd, sweep, determinism, bf16) as child processes of the real commands, each within a
time budget, and writes DIR/report.json and DIR/report.md after every stage. The stages, their
budgets and --quick are described in BENCHMARKS.md; benchmarks/render.py writes report.md.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shlex
import statistics
import sys
import time
from typing import Any, Callable

from benchmarks.render import render_markdown
from benchmarks.stage_process import FULL, QUICK, Context, ReportError, StageFailed, _failed
from benchmarks.stage_process import read_run, run_process
from nkd import fileio
from nkd import run_files

STAGES = ("bench", "teacher", "student", "kd", "sweep", "determinism", "bf16")
DEFAULT_TIME_LIMIT_S = 540
SWEEP_NAME = "report"
REPORT_MD, REPORT_JSON = "report.md", "report.json"
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "chex",
    "numpy",
    "pillow",
    "torch",
)


def main_run(ctx: Context, name: str, flagfile: str, flags: list[str]) -> dict[str, Any]:
  """One `nkd.main` run in DIR/runs/NAME; StageFailed unless it finishes."""
  workdir = os.path.join(ctx.out_dir, "runs", name)
  proc = run_process(
      ctx,
      name,
      [sys.executable, "-m", "nkd.main", f"--flagfile={flagfile}", *flags, f"--workdir={workdir}"],
  )
  if proc["exit_code"] != 0 or not os.path.exists(os.path.join(workdir, run_files.RESULTS)):
    raise StageFailed(_failed(name, proc), {"runs": {name: proc}})
  return {**proc, **read_run(ctx, workdir)}


# ---------------------------------------------------------------------------------------------
# The stages. Each returns its results (a JSON-able dict) or raises StageFailed.


def stage_bench(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  del report
  path = os.path.join(ctx.out_dir, "bench.json")
  torch = importlib.util.find_spec("torch") is not None
  command = [sys.executable, "-m", "benchmarks.bench", f"--json={path}", *ctx.sizes.bench_flags]
  if torch:
    command.append("--torch_reference")
  proc = run_process(ctx, "bench", command)
  if proc["exit_code"] != 0 or not os.path.exists(path):
    raise StageFailed(_failed("benchmarks.bench", proc), {"process": proc})
  with open(path) as f:
    bench = json.load(f)
  rows = {
      name: {k: row.get(k) for k in ("img_per_s", "torch_img_per_s", "jax_over_torch")}
      for name, row in bench["rows"].items()
  }
  torch_ref = bench.get("torch_reference") or {}
  return {
      "process": proc,
      "json": ctx.rel(path),
      "rows": rows,
      "torch_reference": torch,
      "torch_error": torch_ref.get("error") if torch else "PyTorch is not installed",
      "torch_version": torch_ref.get("version"),
      "environment": bench["environment"],
  }


def stage_teacher(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  del report
  return {"run": main_run(ctx, "teacher", "experiments/teacher.flags", ctx.run_flags())}


def stage_student(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  del report
  return {"run": main_run(ctx, "student", "experiments/student.flags", ctx.run_flags())}


def stage_kd(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  del report
  return {
      "run": main_run(ctx, "kd", "experiments/hinton.flags", [*ctx.run_flags(), *ctx.kd_flags()])
  }


def stage_sweep(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  seeds = ctx.sizes.sweep_seeds
  command = [
      sys.executable,
      "-m",
      "nkd.sweep",
      "--flagfile=experiments/hinton.flags",
      f"--grid=seed={','.join(map(str, seeds))}",
      f"--parallel={len(seeds)}",
      f"--workspace={ctx.workspace}",
      f"--name={SWEEP_NAME}",
  ]
  if ctx.quick:  # tiny runs: the estimate is for real ones (a shared CPU may lack it)
    command.append("--mem_per_run_gb=0.5")
  run_flags = [f for f in ctx.run_flags(ctx.sizes.sweep_epochs) if not f.startswith("--workspace")]
  command += ["--", *run_flags, *ctx.kd_flags()]
  proc = run_process(ctx, "sweep", command)
  sweep_json = os.path.join(ctx.workspace, "sweeps", SWEEP_NAME, "sweep.json")
  if not os.path.exists(sweep_json):
    raise StageFailed(_failed("nkd.sweep", proc), {"process": proc})
  with open(sweep_json) as f:
    sweep = json.load(f)
  runs, images = [], 0
  for r in sweep["runs"]:
    row = {
        "name": r["name"],
        "status": r["status"],
        "process_wall_s": r["wall_time_s"],
        "last_log_line": r["last_log_line"] if r["status"] != "ok" else "",
    }
    if r["status"] == "ok":
      row.update(read_run(ctx, r["workdir"]))
      images += row["steps"] * row["batch_size"]
    runs.append(row)
  ok = [r for r in runs if r["status"] == "ok"]
  out = {
      "process": proc,
      "sweep_json": ctx.rel(sweep_json),
      "parallel": sweep["parallel"],
      "wall_time_s": sweep["wall_time_s"],
      "runs": runs,
      "images": images,
      "aggregate_img_per_s_end_to_end": images / sweep["wall_time_s"] if ok else None,
      "aggregate_img_per_s_steady": (
          sum(r["img_per_s"] for r in ok) if ok and len(ok) == len(runs) else None
      ),
  }
  single = ((report["stages"].get("kd") or {}).get("result") or {}).get("run")
  if single and out["aggregate_img_per_s_steady"]:
    out["single_run_img_per_s"] = single["img_per_s"]
    out["speedup_over_one_run"] = out["aggregate_img_per_s_steady"] / single["img_per_s"]
  if proc["exit_code"] != 0 or len(ok) != len(runs):
    raise StageFailed(_failed("nkd.sweep", proc), out)
  return out


def stage_determinism(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  del report
  flags = ctx.run_flags(ctx.sizes.determinism_epochs)
  runs = {}
  try:
    for name, extra in (
        ("deterministic_1", []),
        ("deterministic_2", []),
        ("nondeterministic", ["--nogpu_deterministic"]),
    ):
      runs[name] = main_run(ctx, name, "experiments/student.flags", [*flags, *extra])
  except StageFailed as e:
    raise StageFailed(str(e), {"runs": runs}) from None
  a, b, n = runs["deterministic_1"], runs["deterministic_2"], runs["nondeterministic"]
  deterministic_rate = statistics.mean([a["img_per_s"], b["img_per_s"]])
  on_cpu = a["device"].startswith("cpu")
  return {
      "runs": runs,
      "device": a["device"],
      "deterministic_hashes_equal": a["params_sha256"] == b["params_sha256"],
      "nondeterministic_hash_equal": n["params_sha256"] == a["params_sha256"],
      # Time per image after compilation (steady epochs): what the flag costs a long run.
      "deterministic_img_per_s": deterministic_rate,
      "nondeterministic_img_per_s": n["img_per_s"],
      "time_saved": 1 - deterministic_rate / n["img_per_s"],
      "note": (
          "on a CPU --gpu_deterministic changes nothing (it sets an XLA GPU flag only where "
          "JAX computes on a GPU): the three runs compute the same programs, so any "
          "difference in speed is noise"
          if on_cpu
          else ""
      ),
  }


def stage_bf16(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
  run = main_run(
      ctx, "student_bf16", "experiments/student.flags", [*ctx.run_flags(), "--dtype=bfloat16"]
  )
  out = {"run": run}
  fp32 = ((report["stages"].get("student") or {}).get("result") or {}).get("run")
  if fp32:
    out.update(
        float32_run=fp32["workdir"],
        accuracy_difference=run["test_accuracy"] - fp32["test_accuracy"],
        train_wall_ratio=run["train_wall_s"] / fp32["train_wall_s"],
        img_per_s_ratio=(
            run["img_per_s"] / fp32["img_per_s"] if run["img_per_s"] and fp32["img_per_s"] else None
        ),
    )
  return out


STAGE_FUNCTIONS = {
    "bench": stage_bench,
    "teacher": stage_teacher,
    "student": stage_student,
    "kd": stage_kd,
    "sweep": stage_sweep,
    "determinism": stage_determinism,
    "bf16": stage_bf16,
}
NEEDS = {"kd": "teacher", "sweep": "teacher"}


# ---------------------------------------------------------------------------------------------
# The data.


def prepare_data(ctx: Context, data_dir: str, npz: str) -> None:
  """Fills ctx.data_flags and ctx.data; converts the npz into DIR/data."""
  sizes = ctx.sizes
  if not data_dir and not npz:
    ctx.data = {"dataset": "synthetic", "train_images": sizes.synthetic_train_size}
    ctx.data_flags = [
        "--dataset=synthetic",
        f"--synthetic_train_size={sizes.synthetic_train_size}",
        "--synthetic_test_size=256",
    ]
    return
  if npz:
    from benchmarks import cifar10_npz  # pylint: disable=import-outside-toplevel

    start = time.time()
    data_dir = os.path.join(ctx.out_dir, "data")
    ctx.say(f"converting {npz} into {ctx.rel(data_dir)}/ ...")
    cifar10_npz.write_python_folder(npz, data_dir)
    ctx.data = {
        "dataset": "cifar10",
        "source": "cifar10_jpeg.npz (JPEG copy), converted by " "benchmarks/cifar10_npz.py",
        "convert_s": round(time.time() - start, 1),
        "label": "CIFAR-10 (JPEG copy)",
    }
  else:
    ctx.data = {"dataset": "cifar10", "source": "--data_dir", "label": "CIFAR-10"}
  ctx.data_flags = ["--dataset=cifar10", f"--data_dir={os.path.abspath(data_dir)}", "--nodownload"]
  if sizes.train_subset:
    ctx.data_flags.append(f"--train_subset={sizes.train_subset}")
    ctx.data["train_subset"] = sizes.train_subset


# ---------------------------------------------------------------------------------------------
# The report.


def package_versions() -> dict[str, str | None]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def write_report(ctx: Context, report: dict[str, Any]) -> None:
  report["wall_time_s"] = round(time.time() - ctx.started, 1)
  fileio.write_json(os.path.join(ctx.out_dir, REPORT_JSON), report)
  with fileio.atomic_write(os.path.join(ctx.out_dir, REPORT_MD)) as f:
    f.write(render_markdown(report))


def run_report(
    out_dir: str,
    *,
    quick: bool,
    data_dir: str = "",
    npz: str = "",
    time_limit_s: float | None = None,
    argv: list[str] | None = None,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
  """Runs every stage and writes DIR/report.md and DIR/report.json; returns the report."""
  out_dir = os.path.abspath(out_dir)
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ReportError(
        f"--report={out_dir}: the folder is not empty; give a new one (timings of "
        f"runs found finished would be wrong)"
    )
  if data_dir and npz:
    raise ReportError("--data_dir and --cifar10_npz: give one")
  if not quick and not (data_dir or npz):
    raise ReportError(
        "the full report trains on CIFAR-10: give --data_dir (holding "
        "cifar-10-batches-py/ or cifar-10-python.tar.gz) or --cifar10_npz (the "
        "offline JPEG copy), or use --quick"
    )
  if data_dir and not os.path.isdir(data_dir):
    raise ReportError(f"--data_dir={data_dir}: no such folder")
  if npz and not os.path.isfile(npz):
    raise ReportError(f"--cifar10_npz={npz}: no such file")
  if time_limit_s is None:
    time_limit_s = 0 if quick else DEFAULT_TIME_LIMIT_S
  sizes = QUICK if quick else FULL
  os.makedirs(out_dir, exist_ok=True)
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  # One compilation cache for every child: runs of one shape compile once.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(out_dir, "workspace", "jax_cache"))
  ctx = Context(
      out_dir=out_dir,
      sizes=sizes,
      quick=quick,
      data_flags=[],
      data={},
      time_limit_s=time_limit_s,
      env=env,
      say=say,
  )
  report = {
      "command": "python -m benchmarks.bench "
      + shlex.join([a.replace(out_dir, "DIR") for a in (argv or [])]),
      "quick": quick,
      "started": time.strftime("%Y-%m-%d %H:%M:%S"),
      "time_limit_s": time_limit_s,
      "wall_time_s": 0.0,
      "environment": {
          "python": sys.version.split()[0],
          "packages": package_versions(),
          "cpu_count": os.cpu_count(),
      },
      "sizes": {**dataclasses.asdict(sizes), "budgets_s": dict(sizes.budgets_s)},
      "data": {},
      "stage_order": list(STAGES),
      "stages": {name: {"status": "pending", "budget_s": sizes.budget(name)} for name in STAGES},
  }
  try:
    prepare_data(ctx, data_dir, npz)
    report["data"] = ctx.data
  except Exception as e:  # pylint: disable=broad-except  (a bad npz fails the data stages)
    report["data"] = {"error": f"{type(e).__name__}: {e}"}
  write_report(ctx, report)
  deadline = ctx.started + time_limit_s if time_limit_s else None
  for name in STAGES:
    stage = report["stages"][name]
    needs = NEEDS.get(name)
    if name != "bench" and "error" in report["data"]:
      stage.update(status="skipped", error=f"no data: {report['data']['error']}")
    elif needs and report["stages"][needs]["status"] != "ok":
      stage.update(status="skipped", error=f"needs the {needs} stage, which did not finish")
    elif deadline is not None and deadline - time.time() < 10:
      stage.update(status="skipped", error=f"out of time (--time_limit_s={time_limit_s:g})")
    else:
      ctx.stage_deadline = (
          None if deadline is None else min(deadline, time.time() + 2 * stage["budget_s"])
      )
      say(f"stage {name} (budget {stage['budget_s']} s) ...")
      start = time.time()
      try:
        stage["result"] = STAGE_FUNCTIONS[name](ctx, report)
        stage["status"] = "ok"
      except StageFailed as e:
        stage["result"] = e.partial or None
        timed_out = ctx.stage_deadline is not None and time.time() >= ctx.stage_deadline
        stage.update(status="timed_out" if timed_out else "failed", error=str(e))
      except Exception as e:  # pylint: disable=broad-except  (one stage never stops the rest)
        stage.update(status="failed", error=f"{type(e).__name__}: {e}")
      stage["wall_time_s"] = round(time.time() - start, 1)
    say(
        f"stage {name}: {stage['status']}"
        + (f" in {stage['wall_time_s']:.0f} s" if "wall_time_s" in stage else "")
        + (f": {stage['error']}" if stage.get("error") else "")
    )
    write_report(ctx, report)
  return report
