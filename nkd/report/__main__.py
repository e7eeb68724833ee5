"""Entry point: `python -m nkd.report RUN_DIR [RUN_DIR ...] --out=DIR [--no-figures]`, or
`nkd-report ...`.

Flags are parsed by absl into a FlagValues of their own (as nkd.sweep does), so `main` can be
called again with another command line; a bad command line or bad input is one line on stderr
and exit status 2.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

import nkd.report
from nkd import cli
from nkd.report.loading import ReportError

PROG = "nkd.report"
SECTIONS = (("output", ("out", "no-figures")),)


def _flag_values() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("out", None, "Folder to write the tables and figures into (required).",
                      flag_values=fv, module_name=PROG)
  flags.DEFINE_bool("no-figures", False, "Write the tables only.", flag_values=fv,
                    module_name=PROG)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the report for `argv` (the command line without the program name; default:
  sys.argv's); the exit status. Also the console script `nkd-report`."""
  argv = sys.argv[1:] if argv is None else argv
  fv = _flag_values()
  request = cli.help_request(argv)
  if request:
    cli.print_help(cli.help_text(nkd.report.__doc__, fv, SECTIONS, full=request == "full"))
    return 0
  try:
    run_dirs = fv([PROG, *argv])[1:]
    if not fv.out:
      raise ReportError("--out=DIR is required: the folder to write into")
    if not run_dirs:
      raise ReportError("no RUN_DIR given: name run folders, or folders above them")
    nkd.report.write_report(run_dirs, fv.out, figures=not fv["no-figures"].value)
  except (flags.Error, ReportError) as e:
    message = cli.flag_error(e, fv) if isinstance(e, flags.Error) else e
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
