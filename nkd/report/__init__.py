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

import os
from typing import Sequence

from nkd.report import figures as figures_lib
from nkd.report import tables
from nkd.report.grouping import group_runs
from nkd.report.loading import ReportError, load_runs

__all__ = ["ReportError", "write_report"]


def write_report(paths: Sequence[str], out_dir: str, figures: bool = True) -> list[str]:
  """Writes the tables (and figures) for the runs under `paths`; returns the file names."""
  runs = load_runs(paths)
  groups, notes = group_runs(runs)
  columns = tables.table_columns(runs)
  os.makedirs(out_dir, exist_ok=True)
  texts = {
      "summary.md": tables.summary_markdown(groups, columns, notes),
      "summary.csv": tables.summary_csv(groups, columns),
      "paper_comparison.md": tables.paper_comparison_markdown(groups),
  }
  for name, text in texts.items():
    with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
      f.write(text)
  written = list(texts)
  if figures:
    written += figures_lib.write_figures(groups, out_dir)
  print(f"nkd.report: {len(runs)} runs in {len(groups)} groups -> {out_dir}: "
        + ", ".join(written))
  return written
