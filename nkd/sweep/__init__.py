"""Grid sweeps: many `nkd.main` runs from one flagfile, several at once on one machine.

Modules: grid (values and folder names), plan (the runs and their state), memory (per-run
memory estimate), pool (the subprocess pool), summary (table, sweep.json); the command line
and its --help are in __main__.py.
"""

from nkd.errors import NkdError

PROG = "nkd.sweep"


class SweepError(NkdError):
  """Bad input to the sweep: one line, exit 2."""
