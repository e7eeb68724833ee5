"""Throughput of the pieces that decide how long the paper's experiments take.

  python -m benchmarks.bench [--json=PATH] [--torch_reference] [--quick] [--only=ROW,ROW]
                             [--steps=S] [--repeats=R] [--epoch_images=N] [--pgd_batch=B]
  python -m benchmarks.bench --report=DIR (--data_dir=D | --cifar10_npz=NPZ) [--quick]
  (or: nkd-bench ...)

Rows (img/s, median over --repeats timings (default 5, the epoch row 3), each after a warm-up
that compiles and then runs for 2 seconds; a KD timing is --steps=20 steps):
  kd_step_fp32      the KD train step: WRN-40-2 teacher forward + WRN-16-2 forward, backward
                    and SGD update, batch 128, float32 (nkd.training.steps.make_train_step,
                    with its on-device batch gather, crop and flip)
  kd_step_bf16      the same in bfloat16 (--dtype=bfloat16: parameters stay float32)
  kd_step_fickle    the Fickle Teacher: a teacher with dropout 0.3 kept in dropout mode
  kd_step_softrand  Soft Randomization: Gaussian noise (s=0.05) on the student's input
  epoch             one whole epoch as nkd.training.loop runs it: the epoch's permutation, then
                    every step over a 50,000-image synthetic set held on the device, metrics
                    fetched every 100 steps (float32 KD step)
  pgd20_fp32        PGD-20 (eps 0.031, step 0.003, random start) on a WRN-16-2 at batch 1000,
                    with nkd.evaluation.pgd.pgd_attack; img/s = attacked images per second
  pgd20_bf16        the same with a bfloat16 model

--quick shrinks everything (WRN-10-1 models, batch 32, a 256-image epoch, PGD-2 at batch 64,
2 timings of 2 steps) so a test runs it in seconds; its numbers mean nothing. --torch_reference
also times benchmarks/torch_reference.py (our eager PyTorch version of the same step and
attacks: PGD, APGD-CE) on the same device and prints the ratios JAX / PyTorch. JAX is set up as
for a training run (nkd.pipeline.setup_jax): GPU programs use --xla_gpu_deterministic_ops unless
--gpu_deterministic=false. The device, package versions and every setting go into the JSON.
Run it alone on the machine: anything else running skews it.

--report=DIR runs the whole GPU report instead (benchmarks/report.py: these rows, CIFAR-10
teacher / student / KD runs, a 4-run sweep, determinism, bfloat16) and writes DIR/report.md
and DIR/report.json; see BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Sequence

import jax
from absl import flags

from benchmarks import report
from benchmarks.rows import BenchError, Settings, run_rows
from nkd import cli
from nkd import config as config_lib
from nkd import fileio
from nkd import pipeline
from nkd.devices import environment as run_environment

PROG = "benchmarks.bench"
# --help's areas.
SECTIONS = (
    ("rows and sizes", ("only", "quick", "steps", "repeats", "epoch_images", "pgd_batch")),
    ("output", ("json", "torch_reference")),
    ("the GPU report", ("report", "data_dir", "cifar10_npz", "time_limit_s")),
    ("device", ("gpu_deterministic",)),
)
ROWS = (
    "kd_step_fp32",
    "kd_step_bf16",
    "kd_step_fickle",
    "kd_step_softrand",
    "epoch",
    "pgd20_fp32",
    "pgd20_bf16",
    "apgd_ce_fp32",
    "square_fp32",
    "smoothing_fp32",
)
DESCRIPTIONS = {
    "kd_step_fp32": "KD step, T fwd + S step, fp32",
    "kd_step_bf16": "KD step, bfloat16",
    "kd_step_fickle": "KD step, Fickle teacher (dropout 0.3)",
    "kd_step_softrand": "KD step, Soft Randomization (s=0.05)",
    "epoch": "whole epoch (permutation + steps + fetches)",
    "pgd20_fp32": "PGD attack on the student, fp32",
    "pgd20_bf16": "PGD attack on the student, bfloat16",
    "apgd_ce_fp32": "APGD-CE, PGD's iteration count, fp32",
    "square_fp32": "Square attack, PGD's count as queries, fp32",
    "smoothing_fp32": "smoothing: noisy forward passes (CERTIFY sampling)",
}
# ANCHORS.md, "Speed to beat" (one H200): the numbers this benchmark is compared with.
ANCHORS_H200 = {
    "kd_step_fp32": {"pytorch_eager": 9600, "plain_flax_jit": "33000-40000"},
    "pgd20_fp32": {"pytorch": 5100, "plain_jax": 11100},
    "pgd20_bf16": {"pytorch": 7100, "plain_jax": 18000},
    "four_processes_kd": 86000,
}


def environment() -> dict[str, Any]:
  env = run_environment()
  env["device_kind"] = jax.devices()[0].device_kind
  env["cpu_count"] = os.cpu_count()
  return env


def torch_reference(settings: Settings, rows: Sequence[str]) -> dict[str, Any]:
  """The PyTorch rows, or {'error': why} where PyTorch cannot run."""
  try:  # PyTorch is optional: imported only here.
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_reference as ref  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {
        "error": f"PyTorch is not importable ({e}); install it to compare (it is not a "
        f"requirement of nkd)"
    }
  jax_platform = jax.devices()[0].platform
  torch_device = ref.default_device().type
  if (jax_platform == "gpu") != (torch_device == "cuda"):
    return {
        "error": f"PyTorch runs on {torch_device} but JAX on {jax_platform}: no "
        f"same-device comparison"
    }
  torch_rows = tuple(r for r in rows if r != "epoch")
  results = ref.benchmark(
      teacher=settings.teacher,
      student=settings.student,
      batch=settings.batch,
      pgd_batch=settings.pgd_batch,
      pgd_steps=settings.pgd_steps,
      steps=settings.steps,
      repeats=settings.repeats,
      warmup_s=settings.warmup_s,
      rows=torch_rows,
  )
  return {
      "version": torch.__version__,
      "device": str(ref.default_device()),
      "threads": torch.get_num_threads(),
      "rows": results,
  }


def format_table(result: dict[str, Any]) -> str:
  rows = result["rows"]
  torch_rows = (result.get("torch_reference") or {}).get("rows", {})
  lines = [
      f"{PROG} on {result['environment']['device']} "
      f"({result['environment']['device_count']} device(s)); jax "
      f"{result['environment']['versions']['jax']}"
      + ("; QUICK: tiny models, numbers mean nothing" if result["settings"]["quick"] else "")
  ]
  header = f"{'row':<17} {'what':<44} {'img/s':>10}" + (
      f" {'torch img/s':>12} {'jax/torch':>9}" if torch_rows else ""
  )
  lines += [header, "-" * len(header)]
  for name, row in rows.items():
    line = f"{name:<17} {DESCRIPTIONS[name]:<44} {row['img_per_s']:>10.1f}"
    if torch_rows:
      t = torch_rows.get(name)
      line += (
          f" {t['img_per_s']:>12.1f} {row['img_per_s'] / t['img_per_s']:>8.2f}x"
          if t
          else f" {'-':>12} {'-':>9}"
      )
    lines.append(line)
  if "error" in (result.get("torch_reference") or {}):
    lines.append(f"torch reference: {result['torch_reference']['error']}")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
  """The benchmark's flags; --gpu_deterministic is a run's own option (nkd.config)."""
  flags.DEFINE_string("json", "", "Also write the results as JSON here.", flag_values=fv)
  flags.DEFINE_bool(
      "torch_reference",
      False,
      "Also time benchmarks/torch_reference.py " "(needs PyTorch).",
      flag_values=fv,
  )
  flags.DEFINE_bool(
      "quick", False, "Tiny sizes, for tests; the numbers mean nothing.", flag_values=fv
  )
  flags.DEFINE_list("only", [], f"Rows to run, of {', '.join(ROWS)}; default: all.", flag_values=fv)
  flags.DEFINE_integer("steps", None, "Train steps per timing.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer(
      "repeats", None, "Timings per row (the median is reported).", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
      "epoch_images", None, "Images of the epoch row.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
      "pgd_batch",
      None,
      "Batch of the PGD rows (default 1000; smaller for " "a slow CPU).",
      lower_bound=1,
      flag_values=fv,
  )
  flags.DEFINE_string(
      "report",
      "",
      "Run the whole GPU report into this new folder instead "
      "(benchmarks/report.py): the rows, CIFAR-10 runs, a sweep, determinism, "
      "bfloat16; writes DIR/report.md and DIR/report.json.",
      flag_values=fv,
  )
  flags.DEFINE_string(
      "data_dir",
      "",
      "With --report: CIFAR-10 here (cifar-10-batches-py/ or " "the tarball).",
      flag_values=fv,
  )
  flags.DEFINE_string(
      "cifar10_npz",
      "",
      "With --report: CIFAR-10 from this cifar10_jpeg.npz "
      "(the offline JPEG copy), converted into DIR/data.",
      flag_values=fv,
  )
  flags.DEFINE_float(
      "time_limit_s",
      None,
      "With --report: stop stages at this many seconds in "
      "all (default 540 for the full report, none with --quick; 0: none).",
      flag_values=fv,
  )
  config_lib.define_flags(fv, names=["gpu_deterministic"])


def parse_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, Settings, tuple[str, ...]]:
  """(parsed flags, settings, rows) from the arguments after the program name; BenchError
  says what is wrong in one line."""
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  try:
    rest = flag_values([PROG, *argv])[1:]
  except flags.Error as e:
    raise BenchError(cli.flag_error(e, flag_values)) from None
  if rest:
    raise BenchError(f"unexpected arguments {' '.join(rest)}; options are --flags")
  if not flag_values.report:
    given = [n for n in ("data_dir", "cifar10_npz", "time_limit_s") if flag_values[n].present]
    if given:
      raise BenchError(f"--{given[0]} is an option of --report=DIR")
  else:
    given = [
        n
        for n in (
            "json",
            "only",
            "steps",
            "repeats",
            "epoch_images",
            "pgd_batch",
            "torch_reference",
        )
        if flag_values[n].present
    ]
    if given:
      raise BenchError(
          f"--{given[0]} is not used with --report (the report chooses the rows "
          f"and sizes itself)"
      )
  rows = tuple(flag_values.only) or ROWS
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise BenchError(f"--only: unknown row {unknown[0]!r}; rows are {', '.join(ROWS)}")
  settings = Settings.quick_settings() if flag_values.quick else Settings()
  changes = {
      k: flag_values[k].value
      for k in ("steps", "repeats", "epoch_images", "pgd_batch")
      if flag_values[k].value is not None
  }
  if "repeats" in changes:
    changes["epoch_repeats"] = min(settings.epoch_repeats, changes["repeats"])
  settings = dataclasses.replace(settings, **changes)
  if settings.epoch_images < settings.batch:
    raise BenchError(
        f"--epoch_images={settings.epoch_images}: expected at least one batch "
        f"({settings.batch})"
    )
  return flag_values, settings, rows


def _report(flag_values: flags.FlagValues, argv: Sequence[str], say: Callable[[str], None]) -> int:
  """--report=DIR: benchmarks/report.py in this process (which starts no JAX backend: every
  stage is a child process). Exit 0 if every stage finished, 1 if one did not, 2 bad input."""
  try:
    result = report.run_report(
        flag_values.report,
        quick=flag_values.quick,
        data_dir=flag_values.data_dir,
        npz=flag_values.cifar10_npz,
        time_limit_s=flag_values.time_limit_s,
        argv=list(argv),
        say=say,
    )
  except report.ReportError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(flag_values.report, report.REPORT_MD)) as f:
    print(f.read(), end="", flush=True)
  return 0 if all(s["status"] == "ok" for s in result["stages"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark; `argv` without the program name (default: sys.argv's). Returns the
  exit status. Also the console script `nkd-bench`."""
  argv = sys.argv[1:] if argv is None else argv
  request = cli.help_request(argv)
  if request:
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    cli.print_help(cli.help_text(__doc__, flag_values, SECTIONS, full=request == "full"))
    return 0
  try:
    flag_values, settings, rows = parse_flags(argv)
  except BenchError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2
  say = lambda s: print(f"[{PROG}] {s}", file=sys.stderr, flush=True)  # noqa: E731
  if flag_values.report:
    return _report(flag_values, argv, say)
  # Before the backend starts, as for a run: the timed programs are the ones training runs, with
  # the process's allocator and garbage collector set as nkd.main sets them.
  cli.load_pipeline()
  pipeline.setup_jax(config_lib.Config(gpu_deterministic=flag_values.gpu_deterministic))
  env = environment()
  say(f"{env['device']} x{env['device_count']}, rows: {', '.join(rows)}")
  result = {
      "environment": env,
      "settings": {
          **dataclasses.asdict(settings),
          "gpu_deterministic": flag_values.gpu_deterministic,
      },
      "rows": run_rows(settings, rows, say),
      "anchors_h200": ANCHORS_H200,
  }
  if flag_values.torch_reference:
    say("PyTorch reference ...")
    result["torch_reference"] = torch_reference(settings, rows)
    for name, t in result["torch_reference"].get("rows", {}).items():
      result["rows"][name]["torch_img_per_s"] = t["img_per_s"]
      result["rows"][name]["jax_over_torch"] = result["rows"][name]["img_per_s"] / t["img_per_s"]
  print(format_table(result), flush=True)
  if flag_values.json:
    fileio.write_json(flag_values.json, result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
