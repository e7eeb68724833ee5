"""Collects finished runs into tables, the paper's figures and a comparison with the paper.

  python -m nkd.report RUN_DIR [RUN_DIR ...] --out=DIR [--no-figures]

A RUN_DIR is a run folder (holding `results.json` and `config.json`) or any folder above run
folders; it is searched recursively. Runs are grouped by experiment, variant and noise level:

  experiment  `results.json` "experiment" (else the `name` option).
  variant     the options in `grouping.VARIANT_OPTIONS` (model, mode, label-noise mode, swap
              mode...) that take more than one value within an experiment, so that e.g. T, S
              and TS label corruption or KD vs its CE baseline are never averaged together.
  split       settings that must agree within a group (`epochs`, `dataset`, the PGD eps used
              for each number of steps, the CIFAR-10-C source). Where runs of one group
              disagree, a warning names them and every group of that experiment and variant is
              split by the setting, labelled (e.g. "epochs=100").
  level       `results.json` "level_name" and "level" (absent or null: no noise level).

Written into DIR (tables are byte-identical for the same inputs):
  summary.md, summary.csv    one row per group: mean and sample std (ddof=1) over seeds.
  paper_comparison.md        ours vs `paper_values.PAPER_VALUES` where we have the quantity.
  fig_*.png, fig_*.pdf       the paper's figures, each only when its data exists (see
                             nkd/report/figures.py).

Modules: loading (run folders -> runs and their metrics), grouping (groups, mean ± std), tables
(summary and paper comparison), paper_values (the paper's numbers), figures; `python -m
nkd.report` is nkd/report/__main__.py.
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
  """A FlagValues of its own, so that `main` can be called again with another command line."""
  fv = flags.FlagValues()
  flags.DEFINE_string(
      "out",
      None,
      "Folder to write the tables and figures into (required).",
      flag_values=fv,
      module_name=PROG,
  )
  flags.DEFINE_bool("no-figures", False, "Write the tables only.", flag_values=fv, module_name=PROG)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the report for `argv` (the command line without the program name; default:
  sys.argv's); the exit status. Also the console script `nkd-report`."""
  argv = sys.argv[1:] if argv is None else argv
  fv = _flag_values()
  if cli.answer_help(argv, __doc__, fv, SECTIONS):
    return 0
  try:
    run_dirs = fv([PROG, *argv])[1:]
    if not fv.out:
      raise ReportError("--out=DIR is required: the folder to write into")
    if not run_dirs:
      raise ReportError("no RUN_DIR given: name run folders, or folders above them")
    nkd.report.write_report(run_dirs, fv.out, figures=not fv["no-figures"].value)
  except (flags.Error, ReportError) as e:
    return cli.usage_error(PROG, e, fv)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
