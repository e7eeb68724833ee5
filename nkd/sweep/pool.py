"""The process pool: each run a `python -m nkd.main` child with its output in its folder's
log.txt, `parallel` at a time; SIGTERM or SIGINT stops the running children (they resume on a
rerun)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from typing import Any, Sequence

import nkd
from nkd import run_files
from nkd.fileio import last_log_line
from nkd.sweep import PROG
from nkd.sweep.plan import LOG, Run, read_results, run_state


def child_env(args, parallel: int) -> dict[str, str]:
  """The runs' environment: the repository on PYTHONPATH, each run's share of the GPU
  (--mem_fraction, else 0.9/N), --no_preallocate and --compile_cache."""
  env = dict(os.environ)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(nkd.__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
  env["PYTHONUNBUFFERED"] = "1"
  if args.mem_fraction is not None:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{args.mem_fraction:.3f}"
  elif parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / parallel:.3f}"
  if args.no_preallocate:
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if args.compile_cache:
    env["JAX_COMPILATION_CACHE_DIR"] = args.compile_cache
  return env


class Stopped(Exception):
  """The sweep got SIGTERM or SIGINT (`signum`); its running children have been stopped."""

  def __init__(self, signum):
    super().__init__(signum)
    self.signum = signum


def execute(
    runs: Sequence[Run], parallel: int, env: dict[str, str], flagfile: str, total: int
) -> None:
  """Runs `runs`, `parallel` at a time; fills in each one's outcome. Finished runs are
  skipped; on SIGTERM/SIGINT the running children are stopped (they resume on a rerun)."""
  pending = []
  for run in runs:
    if run_state(flagfile, run) == "finished":
      run.status = "skipped"
      read_results(run)
      say(f"skip   [{run.index + 1}/{total}] {run.name}: finished before")
    else:
      pending.append(run)
  active: dict[subprocess.Popen, tuple[Run, float, Any]] = {}

  def on_signal(signum, frame):  # pylint: disable=unused-argument
    raise Stopped(signum)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while pending or active:
      while pending and len(active) < parallel:
        run = pending.pop(0)
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(run.workdir, LOG), "a")
        log.write(
            f"=== nkd.sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: " f"{shlex.join(run.command)}\n"
        )
        log.flush()
        proc = subprocess.Popen(
            run.command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        active[proc] = (run, time.time(), log)
        say(f"start  [{run.index + 1}/{total}] {run.name} (pid {proc.pid})")
      time.sleep(0.1)
      for proc in [p for p in active if p.poll() is not None]:
        run, start, log = active.pop(proc)
        log.close()
        _finish(run, proc.returncode, time.time() - start)
        say(
            f"{run.status:<6} [{run.index + 1}/{total}] {run.name}: "
            + (
                f"test acc {run.test_accuracy:.2f}%, {run.wall_time_s:.0f}s"
                if run.status == "ok"
                else f"exit {run.exit_code}: {run.last_log_line}"
            )
        )
  except Stopped as stop:
    for proc in active:
      proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 30
    for proc, (run, start, log) in active.items():
      try:
        proc.wait(timeout=max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      log.close()
      run.status, run.exit_code = "interrupted", proc.returncode
      run.wall_time_s = time.time() - start
      run.last_log_line = last_log_line(os.path.join(run.workdir, LOG))
    raise stop
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _finish(run: Run, returncode: int, seconds: float) -> None:
  run.exit_code, run.wall_time_s = returncode, round(seconds, 3)
  results = os.path.join(run.workdir, run_files.RESULTS)
  run.status = "ok" if returncode == 0 and os.path.exists(results) else "failed"
  run.last_log_line = last_log_line(os.path.join(run.workdir, LOG))
  read_results(run)


def say(message: str) -> None:
  """One progress line on stdout: `[nkd.sweep] message`."""
  print(f"[{PROG}] {message}", flush=True)
