"""The report's child processes: its sizes (full and --quick), the context its stages share,
running one command within the stage's time limit, and reading a finished run back."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from nkd import run_files
from nkd.fileio import last_log_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    sweep_seeds=(1, 2),  # two processes at once test the sweep as four do, for half the CPU
    determinism_epochs=2,
    train_subset=256,  # two steps an epoch at batch 128: the runs' cost is the process's own
    synthetic_train_size=256,
    bench_flags=("--quick",),  # every row: the tests check the whole bench through this stage
    budgets_s=(
        ("bench", 90),
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
