"""Collects finished runs into tables, the paper's figures and a comparison with the paper.

Modules: loading (run folders -> runs and their metrics), grouping (groups, mean ± std), tables
(summary and paper comparison), paper_values (the paper's numbers), figures; the command line
and its --help are in __main__.py.
"""

from __future__ import annotations

import os
from typing import Sequence

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
    # Matplotlib loads only to draw (half a second of CPU).
    from nkd.report import figures as figures_lib  # pylint: disable=g-import-not-at-top

    written += figures_lib.write_figures(groups, out_dir)
  print(f"nkd.report: {len(runs)} runs in {len(groups)} groups -> {out_dir}: " + ", ".join(written))
  return written
