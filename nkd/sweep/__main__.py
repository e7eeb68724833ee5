"""Grid sweeps: many `nkd.main` runs from one flagfile, several at once on one machine.

  python -m nkd.sweep --flagfile=experiments/softrand.flags \\
      --grid=seed=0,10,20,30,40 --grid=input_noise_sigma=0.05,0.1,0.2 \\
      [--parallel=N] [--workspace=DIR] [--name=NAME] [-- EXTRA FLAGS FOR EVERY RUN]

or `nkd-sweep ...`. Its options (below) go before `--`, the flags for every run after it.

The grid is the cartesian product of every --grid (the first --grid varies slowest). Each point
is one `python -m nkd.main --flagfile=F [EXTRA FLAGS] --KEY=VALUE ... --workspace=W
--workdir=W/sweeps/NAME/KEY=VALUE,KEY=VALUE` process (NAME: --name, or the flagfile's stem), so
a grid value overrides the flagfile. Values are written in a stable form (floats as Python's
shortest repr, booleans true/false: `=0.10` and `=0.1` name the same run folder); a list-valued
option takes `:` between the elements of one value (`--grid=lr_milestones=60:120,75:150`).

Every run logs to `<workdir>/log.txt`. A finished run (results.json, same config) is skipped, a
partial one resumes from its last checkpoint, a failed one is reported with its exit code and
last log line while the others go on. At the end a table (run, status, test accuracy, wall
time) is printed and WORKSPACE/sweeps/NAME/sweep.json written; the exit status is 0 if no run
failed, 1 if one did, 2 for bad input (one line `nkd.sweep: error: ...`). Distillation runs
share their teachers: each is trained once, under its own file lock, by the first run needing it.

Several runs at once (--parallel=N) share one GPU well (4 on one H200 gave 2.2x the throughput
of one). N is refused when a conservative per-run memory estimate does not fit: into each run's
XLA_PYTHON_CLIENT_MEM_FRACTION of the GPU (the fractions summing to at most 1), or on a CPU into
MemAvailable. On a CPU each run already uses every core; on a TPU use --parallel=1.
"""

from __future__ import annotations

import difflib
import os
import shlex
import sys
import time
from typing import Sequence

from absl import flags

from nkd import cli
from nkd import config as config_lib
from nkd.errors import NkdError
from nkd.sweep import PROG, SweepError
from nkd.sweep.grid import RESERVED, parse_grid
from nkd.sweep.memory import check_parallel
from nkd.sweep.plan import LOG, expand, run_config, run_state
from nkd.sweep.pool import Stopped, child_env, execute, say
from nkd.sweep.summary import format_table, write_sweep_json


class _SweepFlagValues(flags.FlagValues):
  """absl flags that leave --flagfile alone: the sweep's --flagfile is nkd.main's experiment,
  passed on to every run, not a file of the sweep's own flags."""

  def read_flags_from_files(self, argv, force_gnu=True):
    del force_gnu  # nothing is read
    return list(argv)


# --help's areas.
SECTIONS = (
    ("the grid", ("flagfile", "grid", "name", "workspace")),
    ("running", ("parallel", "task_index", "list", "count")),
    (
        "memory and compilation",
        ("mem_fraction", "no_preallocate", "mem_per_run_gb", "compile_cache"),
    ),
)


def _flag_values() -> flags.FlagValues:
  """The sweep's own flags, in a FlagValues of their own that leaves --flagfile to the runs."""
  fv = _SweepFlagValues()
  for define, name, default, help_text in (
      (flags.DEFINE_string, "flagfile", None, "The experiment: an nkd.main flagfile (required)."),
      (
          flags.DEFINE_multi_string,
          "grid",
          [],
          "KEY=V1,V2,...: an option of nkd.main and its "
          "values (repeatable, at least one; ':' between the elements of a list value).",
      ),
      (
          flags.DEFINE_integer,
          "parallel",
          1,
          "Runs at once. Refused where they do not fit in " "memory (see above).",
      ),
      (flags.DEFINE_string, "workspace", None, "Passed to every run; default: the flagfile's."),
      (
          flags.DEFINE_string,
          "name",
          None,
          "The sweep's folder under WORKSPACE/sweeps; default: " "the flagfile's stem.",
      ),
      (
          flags.DEFINE_float,
          "mem_fraction",
          None,
          "XLA_PYTHON_CLIENT_MEM_FRACTION of each run; "
          "default: 0.9/N with --parallel=N > 1. Not set where the variable is set already; N runs "
          "split 90% of the GPU.",
      ),
      (
          flags.DEFINE_bool,
          "no_preallocate",
          False,
          "XLA_PYTHON_CLIENT_PREALLOCATE=false in "
          "each run. Memory is taken as needed instead of the whole fraction at start (less "
          "fragmentation-proof, but lets runs of different sizes share a GPU).",
      ),
      (
          flags.DEFINE_float,
          "mem_per_run_gb",
          None,
          "Replaces the per-run memory estimate of " "the --parallel check (0: no check).",
      ),
      (
          flags.DEFINE_string,
          "compile_cache",
          None,
          "JAX_COMPILATION_CACHE_DIR of each run: runs " "of one shape compile once.",
      ),
      (
          flags.DEFINE_bool,
          "list",
          False,
          "Print each point's index, state and command; run " "nothing.",
      ),
      (flags.DEFINE_bool, "count", False, "Print the number of points; run nothing."),
      (
          flags.DEFINE_integer,
          "task_index",
          None,
          "Run only point I (0-based, the order of "
          "--list), e.g. one SLURM array task (launch/slurm_sweep.sh). Writes no sweep.json.",
      ),
  ):
    define(name, default, help_text, flag_values=fv, module_name=PROG)
  return fv


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Sweep options before the first '--', run flags after it."""
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]
  return argv, []


def parse_flags(own: Sequence[str]) -> flags.FlagValues:
  """The sweep's own flags (the command line before '--'), checked."""
  fv = _flag_values()
  try:
    rest = fv([PROG, *own])[1:]
  except flags.UnrecognizedFlagError as e:
    close = difflib.get_close_matches(e.flagname, list(fv), n=1)
    hint = f"did you mean --{close[0]}? " if close else ""
    raise SweepError(
        f"unrecognized arguments {e.flagvalue} ({hint}flags for the runs go " f"after '--')"
    ) from None
  except flags.Error as e:
    raise SweepError(str(e)) from None
  if rest:
    raise SweepError(
        f"unexpected arguments {' '.join(rest)} (flags for the runs go after " f"'--')"
    )
  if not fv.flagfile:
    raise SweepError("--flagfile is required: the experiment's nkd.main flagfile")
  modes = [f"--{n}" for n in ("list", "count") if fv[n].value]
  modes += ["--task_index"] if fv.task_index is not None else []
  if len(modes) > 1:
    raise SweepError(f"{modes[1]} is not allowed with {modes[0]}")
  if fv.parallel < 1:
    raise SweepError(f"--parallel={fv.parallel}: expected at least 1")
  if fv.mem_fraction is not None and not 0 < fv.mem_fraction <= 1:
    raise SweepError(f"--mem_fraction={fv.mem_fraction}: expected a fraction in (0, 1]")
  if fv.mem_per_run_gb is not None and fv.mem_per_run_gb < 0:
    raise SweepError(f"--mem_per_run_gb={fv.mem_per_run_gb}: expected >= 0")
  return fv


def _check_extra_flags(extra: Sequence[str], grid) -> None:
  keys = {k for k, _ in grid}
  for flag in extra:
    if not flag.startswith("--"):
      raise SweepError(f"extra flag {flag!r} after '--': expected --FLAG=VALUE")
    name = flag[2:].split("=", 1)[0]
    bare = name[2:] if name.startswith("no") and name[2:] in config_lib.option_names() else name
    if bare in RESERVED:
      raise SweepError(
          f"extra flag {flag}: --{bare} is set by the sweep"
          + (" (use nkd.sweep's --workspace, before '--')" if bare == "workspace" else "")
      )
    if bare in keys:
      raise SweepError(f"extra flag {flag}: {bare} is also a --grid key")


def prepare(argv: Sequence[str]):
  """Parses and checks the command line; returns (flags, grid, extra flags, workspace, sweep
  name, runs)."""
  own, extra = split_argv(argv)
  args = parse_flags(own)
  grid = parse_grid(args.grid)
  _check_extra_flags(extra, grid)
  if not os.path.isfile(args.flagfile):
    raise SweepError(f"--flagfile={args.flagfile}: no such file")
  try:
    base = config_lib.parse_flagfile(args.flagfile, extra)
  except NkdError as e:
    raise SweepError(f"the flagfile and extra flags do not make a valid run: {e}") from None
  workspace = args.workspace or base.workspace
  name = args.name or os.path.splitext(os.path.basename(args.flagfile))[0]
  if not name or "/" in name or name in (".", ".."):
    raise SweepError(f"--name={name!r}: expected a folder name")
  runs = expand(args.flagfile, grid, extra, workspace, name)
  if args.task_index is not None and not 0 <= args.task_index < len(runs):
    raise SweepError(
        f"--task_index={args.task_index}: the grid has {len(runs)} points " f"(0..{len(runs) - 1})"
    )
  return args, grid, extra, workspace, name, runs


def main(argv: Sequence[str] | None = None) -> int:
  """The sweep for `argv` (the command line without the program name; default: sys.argv's);
  the exit status. Also the console script `nkd-sweep`."""
  argv = sys.argv[1:] if argv is None else argv
  request = cli.help_request(argv)
  if request:
    cli.print_help(cli.help_text(__doc__, _flag_values(), SECTIONS, full=request == "full"))
    return 0
  try:
    args, grid, extra, workspace, name, runs = prepare(argv)
    if args.count:
      print(len(runs))
      return 0
    if args.list:
      width = max(len(r.name) for r in runs)
      for r in runs:
        print(
            f"{r.index:>3}  {run_state(args.flagfile, r):<8}  {r.name:<{width}}  "
            f"{shlex.join(r.command)}"
        )
      return 0
    selected = runs if args.task_index is None else [runs[args.task_index]]
    parallel = min(args.parallel, len(selected))
    env = child_env(args, parallel)
    if parallel > 1:
      configs = [run_config(args.flagfile, r) for r in selected]
      say(check_parallel(parallel, configs, env, args.mem_per_run_gb))
  except SweepError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2

  sweep_dir = os.path.join(workspace, "sweeps", name)
  started = time.time()
  say(f"{len(selected)} run(s) of {args.flagfile} in {sweep_dir}, {parallel} at a time")
  interrupted = None
  try:
    execute(selected, parallel, env, args.flagfile, len(runs))
  except Stopped as stop:
    interrupted = stop.signum
  print(format_table(selected), flush=True)
  failed = [r for r in selected if r.status in ("failed", "interrupted")]
  if args.task_index is None:
    write_sweep_json(
        sweep_dir,
        flagfile=args.flagfile,
        name=name,
        workspace=workspace,
        grid=grid,
        extra=extra,
        parallel=parallel,
        started=started,
        interrupted=interrupted is not None,
        runs=selected,
    )
  if interrupted is not None:
    say("interrupted: rerun the same command to resume")
    return 128 + interrupted
  if failed:
    say(f"{len(failed)} of {len(selected)} run(s) failed (logs: <workdir>/{LOG})")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
