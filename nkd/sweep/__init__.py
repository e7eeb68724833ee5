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

from nkd.errors import NkdError

PROG = "nkd.sweep"


class SweepError(NkdError):
  """Bad input to the sweep: one line, exit 2."""
