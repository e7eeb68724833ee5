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
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from benchmarks.render import render_markdown
from nkd import fileio
from nkd import run_files
from nkd.fileio import last_log_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
_GRACE_S = 20  # between SIGTERM and SIGKILL of a stage stopped for time


class ReportError(Exception):
  """Bad input: one line, exit 2."""


class StageFailed(Exception):
  """A stage that did not produce its result; the message is one line."""

  def __init__(self, message: str, partial: dict[str, Any] | None = None):
    super().__init__(message)
    self.partial = partial or {}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What each stage trains; budgets are seconds on one H100/H200 (full) or a small CPU."""

  model_override: str = ""  # "" keeps each flagfile's model
  epochs: int = 15
  sweep_epochs: int = 4
  sweep_seeds: tuple[int, ...] = (1, 2, 3, 4)
  determinism_epochs: int = 5
  train_subset: int = 0  # on CIFAR-10: the first N training images (0: all)
  synthetic_train_size: int = 0  # 0: CIFAR-10 is required
  bench_flags: tuple[str, ...] = ()
  budgets_s: tuple[tuple[str, int], ...] = (
      ("bench", 120),
      ("teacher", 90),
      ("student", 45),
      ("kd", 65),
      ("sweep", 75),
      ("determinism", 75),
      ("bf16", 45),
  )

  def budget(self, stage: str) -> int:
    return dict(self.budgets_s)[stage]


FULL = Sizes()
# Two epochs where a rate after compilation is measured (the sweep, determinism).
QUICK = Sizes(
    model_override="wrn-10-1",
    epochs=1,
    sweep_epochs=2,
    determinism_epochs=2,
    train_subset=512,
    synthetic_train_size=512,
    bench_flags=("--quick", "--only=kd_step_fp32,epoch,pgd20_fp32"),
    budgets_s=(
        ("bench", 45),
        ("teacher", 20),
        ("student", 15),
        ("kd", 20),
        ("sweep", 45),
        ("determinism", 40),
        ("bf16", 20),
    ),
)


@dataclasses.dataclass
class Context:
  """Where the report writes and how its runs are made."""

  out_dir: str  # absolute
  sizes: Sizes
  quick: bool
  data_flags: list[str]
  data: dict[str, Any]
  time_limit_s: float
  started: float = dataclasses.field(default_factory=time.time)
  env: dict[str, str] = dataclasses.field(default_factory=dict)
  stage_deadline: float | None = None
  say: Callable[[str], None] = lambda s: None

  @property
  def workspace(self) -> str:
    return os.path.join(self.out_dir, "workspace")

  def rel(self, path: str) -> str:
    return os.path.relpath(path, self.out_dir)

  def shown(self, command: list[str]) -> str:
    """A command as the report shows it: `python`, DIR for the report folder."""
    words = ["python" if w == sys.executable else w.replace(self.out_dir, "DIR") for w in command]
    return shlex.join(words)

  def run_flags(self, epochs: int | None = None) -> list[str]:
    """Flags every nkd.main run of the report gets after its flagfile."""
    flags = [
        *self.data_flags,
        f"--epochs={epochs or self.sizes.epochs}",
        "--lr_schedule=cosine",
        "--eval_suite=accuracy",
        f"--workspace={self.workspace}",
    ]
    if self.sizes.model_override:
      flags.append(f"--model={self.sizes.model_override}")
    return flags

  def kd_flags(self) -> list[str]:
    """The KD runs' teacher: the teacher stage's run, recorded with its recipe's flags."""
    flags = [
        f"--teacher_workdir={os.path.join(self.out_dir, 'runs', 'teacher')}",
        f"--teacher_flags=--epochs={self.sizes.epochs}",
        "--teacher_flags=--lr_schedule=cosine",
    ]
    if self.sizes.model_override:
      flags.append(f"--teacher_flags=--model={self.sizes.model_override}")
    return flags


# ---------------------------------------------------------------------------------------------
# Child processes.


def run_process(ctx: Context, name: str, command: list[str]) -> dict[str, Any]:
  """Runs `command` from the repository root in its own process group, output to
  DIR/logs/NAME.log; stops the group (SIGTERM, then SIGKILL) at the stage's deadline."""
  log = os.path.join(ctx.out_dir, "logs", f"{name}.log")
  os.makedirs(os.path.dirname(log), exist_ok=True)
  start = time.time()
  with open(log, "a") as f:
    f.write(f"=== {ctx.shown(command)}\n")
    f.flush()
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=ctx.env,
        stdout=f,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    timed_out = False
    try:
      timeout = None if ctx.stage_deadline is None else max(0.0, ctx.stage_deadline - time.time())
      proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      timed_out = True
      _stop_group(proc)
    except BaseException:
      _stop_group(proc)
      raise
  out = {
      "command": ctx.shown(command),
      "log": ctx.rel(log),
      "exit_code": proc.returncode,
      "process_wall_s": round(time.time() - start, 3),
      "timed_out": timed_out,
      "last_log_line": last_log_line(log),
  }
  return out


def _stop_group(proc: subprocess.Popen) -> None:
  """SIGTERM to the child's process group (nkd.main and nkd.sweep stop cleanly on it), then
  SIGKILL to whatever is left."""
  for sig, wait in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, 10)):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(timeout=wait)
      return
    except subprocess.TimeoutExpired:
      continue


def _failed(what: str, proc: dict[str, Any]) -> str:
  why = "stopped at the stage's time limit" if proc["timed_out"] else f"exit {proc['exit_code']}"
  return f"{what}: {why}: {proc['last_log_line'][:300]}"


def steady_img_per_s(metrics: list[dict[str, Any]]) -> float | None:
  """Training img/s without compilation: the median over the epochs after the first (the
  first epoch's time includes compiling the step), or the first when there is one."""
  rates = [m["img_per_s"] for m in metrics if "img_per_s" in m]
  if not rates:
    return None
  return statistics.median(rates[1:] if len(rates) > 1 else rates)


def read_run(ctx: Context, workdir: str) -> dict[str, Any]:
  """What the report keeps of a finished run folder."""
  results = run_files.read_results(workdir)
  options = run_files.read_json(os.path.join(workdir, run_files.CONFIG))["options"]
  metrics = run_files.read_metrics(workdir)
  return {
      "workdir": ctx.rel(workdir),
      "model": results.model,
      "dtype": options.get("dtype"),
      "epochs": results.epochs,
      "steps": results.steps,
      "batch_size": options.get("batch_size"),
      "seed": results.seed,
      "test_accuracy": results.test_accuracy,
      "train_wall_s": results.wall_time_s,
      "img_per_s": steady_img_per_s(metrics),
      "first_epoch_img_per_s": metrics[0].get("img_per_s") if metrics else None,
      "params_sha256": results.params_sha256,
      "device": results.device,
      "gpu_deterministic": options.get("gpu_deterministic"),
  }


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
          "on a CPU --gpu_deterministic changes nothing (it only sets an XLA GPU flag): "
          "the three runs compute the same programs, so any difference in speed is noise "
          "(the non-deterministic run compiles its own copy of them: the XLA flags are "
          "part of the compilation cache's key)"
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
