"""The report's tables: summary.md and summary.csv (one row per group) and paper_comparison.md
(ours vs `nkd.report.paper_values.PAPER_VALUES`). Byte-identical for the same runs."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any, Sequence

from nkd.config.evaluation import PGD_PRESETS
from nkd.report import paper_values as paper_values_lib
from nkd.report.grouping import Group, Stat, fmt_level, fmt_seed
from nkd.report.loading import Run, eps_key, fmt_number, number

# The PGD columns always shown (the paper's protocol), plus any others found in the runs.
DEFAULT_PGD = tuple(
    (steps, eps) for eps in PGD_PRESETS["paper"]["eps"] for steps in PGD_PRESETS["paper"]["steps"]
)
DASH = "–"
DAGGER = "†"


@dataclasses.dataclass(frozen=True)
class Column:
  key: tuple
  header: str  # Markdown header
  csv_name: str
  decimals: int


def table_columns(runs: Sequence[Run]) -> list[Column]:
  pgd = set(DEFAULT_PGD)
  for run in runs:
    pgd.update((k[1], k[2]) for k in run.metrics if k[0] == "pgd")
  columns = [
      Column(("test_accuracy",), "test acc.", "test_accuracy", 2),
      Column(("cinic_accuracy",), "CINIC ImageNet acc.", "cinic_accuracy", 2),
  ]
  for steps, eps in sorted(pgd):
    columns.append(
        Column(
            ("pgd", steps, eps, "robust"),
            f"PGD-{steps} ε={fmt_number(eps)}",
            f"pgd{steps}_eps{fmt_number(eps)}_robust",
            2,
        )
    )
  # AutoAttack beside PGD: is a robustness the paper's PGD measures real?
  for eps in sorted({k[1] for run in runs for k in run.metrics if k[0] == "autoattack"}):
    columns.append(
        Column(
            ("autoattack", eps),
            f"AutoAttack ε={fmt_number(eps)}",
            f"autoattack_eps{fmt_number(eps)}",
            2,
        )
    )
  for radius in sorted({k[1] for run in runs for k in run.metrics if k[0] == "certified"}):
    columns.append(
        Column(
            ("certified", radius),
            f"certified r={fmt_number(radius)}",
            f"certified_r{fmt_number(radius)}",
            2,
        )
    )
  columns += [
      Column(("cifar10_c_mean_15",), "CIFAR-10-C mean-15", "cifar10_c_mean_15", 2),
      Column(("cifar10_c_mean_19",), "CIFAR-10-C mean-19", "cifar10_c_mean_19", 2),
      Column(
          ("cifar10_c_relative_mean_15",),
          "CIFAR-10-C mean-15 rel. to clean",
          "cifar10_c_relative_mean_15",
          2,
      ),
      Column(("ece",), "ECE", "ece", 2),
  ]
  return columns


def fmt_stat(stat: Stat | None, decimals: int) -> str:
  if stat is None:
    return DASH
  std = DASH if stat.std is None else f"{stat.std:.{decimals}f}"
  return f"{stat.mean:.{decimals}f} ± {std}"


def _cifar10_c_sources(group: Group) -> str:
  sources = sorted(
      {
          str(r.results.cifar10_c.get("source"))
          for r in group.runs
          if isinstance(r.results.cifar10_c, dict)
      }
  )
  return ",".join(sources)


def _md_cell(text: str) -> str:
  return text.replace("|", "\\|") if text else DASH


def _md_row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |\n"


# ---------------------------------------------------------------------------------------------
# Summary.


def summary_markdown(
    groups: Sequence[Group], columns: Sequence[Column], notes: Sequence[str]
) -> str:
  out = io.StringIO()
  out.write("# nkd results summary\n\n")
  out.write(
      "Each cell: mean ± sample standard deviation (ddof=1) over seeds; the std is "
      f'"{DASH}" with one seed. A cell that is only "{DASH}": no run of the group reported '
      'that metric. "(n=k)": only k of the row\'s runs reported it. '
      f"{DAGGER} after n: the group has fewer seeds than the largest group of its experiment "
      "(the missing seeds are listed under the table). Accuracies in %; ECE (15 bins) in % "
      "as nkd.evaluation reports it; PGD = per-example worst case over restarts "
      "(`robust_accuracy`); CIFAR-10-C mean-15 = the 15 standard corruptions x 5 severities, "
      "mean-19 = all 19; rel. to clean = corrupted / clean accuracy x 100 (how the paper's "
      "Figure 5 most likely reports it). Runs are named by their path relative to the common "
      "parent folder.\n"
  )
  headers = (
      ["variant / split", "level name", "level", "n", "seeds"]
      + [c.header for c in columns]
      + ["CIFAR-10-C source"]
  )
  for experiment in sorted({g.experiment for g in groups}):
    members = [g for g in groups if g.experiment == experiment]
    out.write(f"\n## {experiment}\n\n")
    out.write(_md_row(headers))
    out.write("|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 4) + ["---"]) + "|\n")
    for group in members:
      out.write(_md_row(_summary_cells(group, columns)))
    out.write(_missing_lines(members, columns))
  if notes:
    out.write("\n## Warnings\n\n")
    for note in notes:
      out.write(f"- {note}\n")
  return out.getvalue()


def _summary_cells(group: Group, columns: Sequence[Column]) -> list[str]:
  cells = [
      _md_cell(group.label),
      _md_cell(group.level_name or ""),
      _md_cell(fmt_level(group.level)),
      f"{group.n}{' ' + DAGGER if group.fewer_seeds else ''}",
      ",".join(fmt_seed(s) for s in group.seeds),
  ]
  for column in columns:
    stat = group.stat(column.key)
    text = fmt_stat(stat, column.decimals)
    if stat is not None and stat.n < group.n:
      text += f" (n={stat.n})"
    cells.append(text)
  return cells + [_md_cell(_cifar10_c_sources(group))]


def _missing_lines(members: Sequence[Group], columns: Sequence[Column]) -> str:
  """The lists under an experiment's table: missing seeds, then metrics some runs lack."""
  out = io.StringIO()
  short = [g for g in members if g.missing_seeds]
  if short:
    out.write("\nMissing seeds (present elsewhere in this experiment):\n")
    for group in short:
      seeds = ", ".join(fmt_seed(s) for s in group.missing_seeds)
      out.write(f"- {group.title()}: {seeds}\n")
  partial = [
      (g, c)
      for g in members
      for c in columns
      if 0 < (g.stat(c.key).n if g.stat(c.key) else 0) < g.n
  ]
  if partial:
    out.write("\nMetrics missing from some runs of a group:\n")
    for group, column in partial:
      seeds = ", ".join(fmt_seed(s) for s in group.seeds_without(column.key))
      out.write(f"- {group.title()}: {column.header} missing for seed(s) {seeds}\n")
  return out.getvalue()


def _csv_number(value: float | None) -> str:
  return "" if value is None else f"{value:.6f}"


def summary_csv(groups: Sequence[Group], columns: Sequence[Column]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  header = [
      "experiment",
      "variant",
      "level_name",
      "level",
      "n",
      "seeds",
      "missing_seeds",
      "fewer_seeds",
  ]
  for column in columns:
    header += [f"{column.csv_name}_mean", f"{column.csv_name}_std", f"{column.csv_name}_n"]
  writer.writerow(header + ["cifar10_c_source"])
  for group in groups:
    row = [
        group.experiment,
        group.label,
        group.level_name or "",
        fmt_level(group.level),
        str(group.n),
        ";".join(fmt_seed(s) for s in group.seeds),
        ";".join(fmt_seed(s) for s in group.missing_seeds),
        DAGGER if group.fewer_seeds else "",
    ]
    for column in columns:
      stat = group.stat(column.key)
      row += [_csv_number(stat.mean), _csv_number(stat.std), str(stat.n)] if stat else ["", "", "0"]
    writer.writerow(row + [_cifar10_c_sources(group)])
  return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Ours vs the paper.


def _level_matches(level: Any, accepted: Sequence[Any]) -> bool:
  value = number(level)
  for want in accepted:
    if want is None and level is None:
      return True
    if want is not None and value is not None and abs(value - want) < 1e-9:
      return True
  return False


def _selector_matches(group: Group, selector: dict[str, Any]) -> bool:
  if group.experiment not in selector["experiments"]:
    return False
  if not _level_matches(group.level, selector["levels"]):
    return False
  if "level_name_contains" in selector:
    if selector["level_name_contains"] not in (group.level_name or ""):
      return False
  for name, want in selector.get("options", {}).items():
    if any(name in r.options and r.options[name] != want for r in group.runs):
      return False
  return True


def _fmt_paper(value: Any) -> str:
  if isinstance(value, tuple):
    return f"{value[0]:.2f}–{value[1]:.2f}"
  return f"{value:.2f}"


def _fmt_difference(mean: float, value: Any) -> str:
  if isinstance(value, tuple):
    low, high = value
    if mean < low:
      return f"{mean - low:+.2f} (below the range)"
    if mean > high:
      return f"{mean - high:+.2f} (above the range)"
    return "0.00 (within the range)"
  return f"{mean - value:+.2f}"


def _compared_metrics(entry: dict[str, Any], group: Group) -> list[tuple[tuple, str]]:
  """(metric key, label) of each of our metrics a paper value compares with, in `group`."""
  if entry["metric"] in ("test_accuracy", "cinic_accuracy"):
    return [((entry["metric"],), entry["metric"])]
  if entry["metric"] == "cifar10_c_relative":
    return [
        (
            ("cifar10_c_relative", entry["corruption"]),
            f"CIFAR-10-C {entry['corruption']} relative to clean (corrupted / clean x 100), "
            f"mean over severities",
        )
    ]
  eps = eps_key(entry["pgd_eps"])
  steps = sorted(
      {
          k[1]
          for r in group.runs
          for k in r.metrics
          if k[0] == "pgd" and k[2] == eps and entry["pgd_steps"] in (None, k[1])
      }
  )
  metrics = []
  for step in steps:
    metrics.append(
        (
            ("pgd", step, eps, "robust"),
            f"PGD-{step} ε={fmt_number(eps)} robust_accuracy (per-example worst)",
        )
    )
    metrics.append(
        (
            ("pgd", step, eps, "worst_restart"),
            f"PGD-{step} ε={fmt_number(eps)} worst_restart_accuracy " "(paper's protocol)",
        )
    )
  return metrics


def paper_comparison_markdown(
    groups: Sequence[Group], values: dict[str, dict[str, Any]] | None = None
) -> str:
  values = paper_values_lib.PAPER_VALUES if values is None else values
  rows: list[list[str]] = []
  not_compared: list[str] = []
  for key, entry in values.items():
    matched = [g for g in groups if any(_selector_matches(g, s) for s in entry["match"])]
    found = False
    for group in matched:
      for metric_key, metric_label in _compared_metrics(entry, group):
        stat = group.stat(metric_key)
        if stat is None:
          continue
        found = True
        rows.append(
            [
                entry["quantity"],
                metric_label,
                _fmt_paper(entry["value"]),
                fmt_stat(stat, 2),
                str(stat.n),
                _fmt_difference(stat.mean, entry["value"]),
                group.title(),
                entry.get("note", ""),
            ]
        )
    if not found:
      not_compared.append(f"{key}: {entry['quantity']}")

  out = io.StringIO()
  out.write("# nkd vs the paper\n\n")
  out.write(
      "Paper: the published values in `nkd/report/paper_values.py` (ANCHORS.md, read off the "
      "submission's figures: approximate). Ours: mean ± sample standard deviation (ddof=1) "
      "over n seeds, in %. Difference: ours − paper; for a range, the distance to its nearest "
      "end (0 inside). The paper's CIFAR-10-C numbers are compared with our accuracy relative "
      "to clean (corrupted / clean x 100), which is what they most likely are "
      "(docs/FIDELITY.md). Only quantities that exist in these runs are listed.\n\n"
  )
  if rows:
    out.write("| quantity | our metric | paper | ours | n | ours − paper | our group | note |\n")
    out.write("|---|---|---:|---:|---:|---:|---|---|\n")
    for row in rows:
      out.write(_md_row([_md_cell(c) if c else "" for c in row]))
  else:
    out.write("No published quantity matches these runs.\n")
  if not_compared:
    out.write("\nNot compared (no matching runs or metric):\n")
    for line in not_compared:
      out.write(f"- {line}\n")
  return out.getvalue()
