"""Collects finished runs into tables, the paper's figures and a comparison with the paper.

  python -m nkd.report RUN_DIR [RUN_DIR ...] --out=DIR [--no-figures]

A RUN_DIR is a run folder (holding `results.json` and `config.json`) or any folder above run
folders; it is searched recursively. Runs are grouped by experiment, variant and noise level:

  experiment  `results.json` "experiment" (else the `name` option).
  variant     the options in `VARIANT_OPTIONS` (model, mode, label-noise mode, swap mode...)
              that take more than one value within an experiment, so that e.g. T, S and TS
              label corruption or KD vs its CE baseline are never averaged together.
  split       settings that must agree within a group (`epochs`, `dataset`, the PGD eps used
              for each number of steps, the CIFAR-10-C source). Where runs of one group
              disagree, a warning names them and every group of that experiment and variant is
              split by the setting, labelled (e.g. "epochs=100").
  level       `results.json` "level_name" and "level" (absent or null: no noise level).

Written into DIR (tables are byte-identical for the same inputs):
  summary.md, summary.csv    one row per group: mean and sample std (ddof=1) over seeds.
  paper_comparison.md        ours vs `nkd.paper_values.PAPER_VALUES` where we have the quantity.
  fig_*.png, fig_*.pdf       the paper's figures, each only when its data exists:
    fig_accuracy_<exp>           test / CINIC accuracy vs noise level (Figures 1-3).
    fig_pgd_<exp>[__<variant>]   PGD robustness, PGD steps x level (Figure 4).
    fig_cifar10c_<exp>[__<var>]  CIFAR-10-C accuracy, corruption x level (Figures 5, 6, 10, 11).
    fig_label_corruption[_fixed] test accuracy vs p, one line per mode T/S/TS (Figures 7, 8).
    fig_swap                     test accuracy vs p, top-2 vs all swaps (Figure 9).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
from typing import Any, Iterable, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from nkd import paper_values as paper_values_lib
from nkd.errors import NkdError

STANDARD_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS

# Options that define distinct variants of one experiment when they differ between its runs.
VARIANT_OPTIONS = ("model", "mode", "label_noise_mode", "label_noise_fixed", "swap_mode")
# Settings that must agree within a group (see the module docstring).
BASE_SETTINGS = ("epochs", "dataset", "c10c_source")
# Experiments drawn as dashed reference lines in the accuracy-vs-level figures.
REFERENCE_EXPERIMENTS = ("hinton",)
# The PGD columns always shown (the paper's protocol), plus any others found in the runs.
DEFAULT_PGD = ((5, 0.031), (10, 0.031), (20, 0.031))
LABEL_NOISE_MODES = ("T", "S", "TS")
SWAP_MODES = ("top2", "all")

DASH = "–"
DAGGER = "†"
_EPS_DIGITS = 6


class ReportError(NkdError):
  """Bad input: ends the report with a one-line message and a non-zero exit status."""


def warn(message: str) -> None:
  print(f"nkd.report: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Loading runs.


@dataclasses.dataclass
class Run:
  path: str  # real path of the run folder
  options: dict[str, Any]
  results: dict[str, Any]
  name: str = ""  # path relative to the common parent of all runs
  experiment: str = ""
  seed: Any = None
  level_name: str | None = None
  level: Any = None
  metrics: dict[tuple, float] = dataclasses.field(default_factory=dict)
  settings: dict[str, str] = dataclasses.field(default_factory=dict)
  variant: tuple[tuple[str, str], ...] = ()
  split: tuple[tuple[str, str], ...] = ()


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ReportError(f"cannot read {path}: {e}") from None
  if not isinstance(data, dict):
    raise ReportError(f"cannot read {path}: expected a JSON object, got {type(data).__name__}")
  return data


def find_run_dirs(paths: Sequence[str]) -> list[str]:
  """Real paths of the run folders under `paths`; warns about folders it has to skip."""
  found: list[str] = []
  for path in paths:
    if os.path.isfile(path) and os.path.basename(path) == "results.json":
      path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
      warn(f"{path}: {'not a folder' if os.path.exists(path) else 'no such folder'}, skipped")
      continue
    if os.path.isfile(os.path.join(path, "results.json")):
      found.append(os.path.realpath(path))
      continue
    if os.path.isfile(os.path.join(path, "config.json")):
      warn(f"{path}: run folder without results.json (unfinished or failed run?), skipped")
      continue
    before = len(found)
    for root, dirs, files in os.walk(path):
      dirs.sort()
      if "results.json" in files:
        found.append(os.path.realpath(root))
        dirs[:] = []  # a run folder's subfolders are checkpoints, not runs
      elif "config.json" in files:
        warn(f"{root}: run folder without results.json (unfinished or failed run?), skipped")
        dirs[:] = []
    if len(found) == before:
      warn(f"{path}: no results.json found in it or below it, skipped")
  return sorted(set(found))


def _number(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _eps_key(eps: Any) -> float | None:
  eps = _number(eps)
  return None if eps is None else round(eps, _EPS_DIGITS)


def _fmt_number(value: float) -> str:
  return f"{value:g}"


def _fmt_option(value: Any) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, float):
    return _fmt_number(value)
  return json.dumps(value, sort_keys=True)


def _select_pgd(entries: Iterable[Any]) -> dict[tuple[int, float], dict[str, Any]]:
  """One PGD entry per (steps, eps): CE loss first, then the most restarts, then the first."""
  chosen: dict[tuple[int, float], tuple[tuple, dict[str, Any]]] = {}
  for index, entry in enumerate(entries):
    if not isinstance(entry, dict):
      continue
    steps, eps = _number(entry.get("steps")), _eps_key(entry.get("eps"))
    if steps is None or eps is None:
      continue
    rank = (entry.get("loss", "ce") != "ce", -(_number(entry.get("restarts")) or 0), index)
    key = (int(steps), eps)
    if key not in chosen or rank < chosen[key][0]:
      chosen[key] = (rank, entry)
  return {key: entry for key, (_, entry) in chosen.items()}


def extract_metrics(results: dict[str, Any], where: str) -> tuple[dict[tuple, float], dict]:
  """Metrics of one run, keyed by tuples, and its PGD eps per number of steps.

  Keys: ("test_accuracy",), ("cinic_accuracy",), ("ece",), ("c10c_mean_15",),
  ("c10c_mean_19",), ("c10c", corruption), ("pgd", steps, eps, "robust"|"worst_restart").
  A value that is present but not a finite number is treated as missing, with a warning.
  """
  metrics: dict[tuple, float] = {}

  def put(key: tuple, value: Any, label: str) -> None:
    number = _number(value)
    if number is not None:
      metrics[key] = number
    elif value is not None:
      warn(f"{where}: {label} is {value!r}, not a finite number: treated as missing")

  put(("test_accuracy",), results.get("test_accuracy"), "test_accuracy")

  cinic = results.get("cinic_imagenet")
  if isinstance(cinic, dict) and cinic.get("status", "ok") == "ok":
    put(("cinic_accuracy",), cinic.get("accuracy"), "cinic_imagenet.accuracy")

  calibration = results.get("calibration")
  if isinstance(calibration, dict):
    put(("ece",), calibration.get("ece"), "calibration.ece")

  pgd_eps: dict[int, set[float]] = {}
  pgd = results.get("pgd")
  # nkd.evaluation writes the attacks under "results" ("runs" in early fixtures).
  entries = pgd.get("results", pgd.get("runs")) if isinstance(pgd, dict) else pgd
  if isinstance(entries, list):
    for (steps, eps), entry in sorted(_select_pgd(entries).items()):
      pgd_eps.setdefault(steps, set()).add(eps)
      label = f"pgd steps={steps} eps={_fmt_number(eps)}"
      put(("pgd", steps, eps, "robust"), entry.get("robust_accuracy"), label + " robust_accuracy")
      put(("pgd", steps, eps, "worst_restart"), entry.get("worst_restart_accuracy"),
          label + " worst_restart_accuracy")

  c10c = results.get("cifar10_c")
  if isinstance(c10c, dict):
    per_corruption = c10c.get("mean_per_corruption")
    per_corruption = per_corruption if isinstance(per_corruption, dict) else {}
    by_severity = c10c.get("accuracy")
    by_severity = by_severity if isinstance(by_severity, dict) else {}
    for name in sorted(set(per_corruption) | set(by_severity)):
      value = _number(per_corruption.get(name))
      severities = by_severity.get(name)
      if value is None and isinstance(severities, dict) and severities:
        values = [_number(v) for v in severities.values()]
        if all(v is not None for v in values):
          value = math.fsum(values) / len(values)
      if value is not None:
        metrics[("c10c", name)] = value
    for key, names in (("c10c_mean_15", STANDARD_CORRUPTIONS), ("c10c_mean_19", ALL_CORRUPTIONS)):
      if c10c.get(key.removeprefix("c10c_")) is not None:
        put((key,), c10c.get(key.removeprefix("c10c_")), f"cifar10_c.{key.removeprefix('c10c_')}")
      elif all(("c10c", name) in metrics for name in names):
        metrics[(key,)] = math.fsum(metrics[("c10c", name)] for name in names) / len(names)
  return metrics, pgd_eps


def load_run(path: str) -> Run:
  results = _read_json(os.path.join(path, "results.json"))
  config_path = os.path.join(path, "config.json")
  options: dict[str, Any] = {}
  if os.path.isfile(config_path):
    config = _read_json(config_path)
    options = config.get("options") if isinstance(config.get("options"), dict) else {}
  else:
    warn(f"{path}: no config.json; its options are unknown")
  return Run(path=path, options=options, results=results)


def _seed_sort_key(seed: Any) -> tuple:
  number = _number(seed)
  return (0, number, "") if number is not None else (1, 0.0, str(seed))


def _level_sort_key(level: Any) -> tuple:
  if level is None:
    return (0, 0.0, "")
  number = _number(level)
  return (1, number, "") if number is not None else (2, 0.0, str(level))


def _fmt_level(level: Any) -> str:
  if level is None:
    return ""
  number = _number(level)
  return _fmt_number(number) if number is not None else str(level)


def _fmt_seed(seed: Any) -> str:
  number = _number(seed)
  if number is not None and number == int(number):
    return str(int(number))
  return "?" if seed is None else str(seed)


def load_runs(paths: Sequence[str]) -> list[Run]:
  """Loads every run under `paths`, names it relative to the common parent, reads its fields."""
  run_dirs = find_run_dirs(paths)
  if not run_dirs:
    raise ReportError("no usable run: no results.json found in " + " ".join(paths))
  runs = [load_run(path) for path in run_dirs]
  parent = os.path.commonpath([os.path.dirname(run.path) for run in runs])
  for run in runs:
    run.name = os.path.relpath(run.path, parent).replace(os.sep, "/")
  for run in runs:
    res, opt = run.results, run.options
    run.experiment = str(res.get("experiment") or opt.get("name") or "unnamed")
    if opt.get("name") and res.get("experiment") and opt["name"] != res["experiment"]:
      warn(f"{run.name}: results.json says experiment {res['experiment']!r} but the name option "
           f"is {opt['name']!r}; using {res['experiment']!r}")
    run.seed = res.get("seed", opt.get("seed"))
    run.level_name = res.get("level_name")
    run.level = res.get("level")
    run.metrics, pgd_eps = extract_metrics(res, run.name)
    epochs = res.get("epochs", opt.get("epochs"))
    c10c = res.get("cifar10_c")
    settings = {
        "epochs": None if epochs is None else _fmt_option(epochs),
        "dataset": None if opt.get("dataset") is None else _fmt_option(opt["dataset"]),
        "c10c_source": c10c.get("source") if isinstance(c10c, dict) else None,
    }
    for steps, eps in pgd_eps.items():
      settings[f"pgd{steps}_eps"] = ",".join(_fmt_number(e) for e in sorted(eps))
    run.settings = {k: str(v) for k, v in settings.items() if v is not None}
  return sorted(runs, key=lambda r: r.name)


# ---------------------------------------------------------------------------------------------
# Grouping and statistics.


@dataclasses.dataclass(frozen=True)
class Stat:
  mean: float
  std: float | None  # sample std (ddof=1); None with one value
  n: int


def mean_std(values: Sequence[float]) -> Stat:
  n = len(values)
  mean = math.fsum(values) / n
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
  return Stat(mean, std, n)


@dataclasses.dataclass
class Group:
  experiment: str
  variant: tuple[tuple[str, str], ...]
  split: tuple[tuple[str, str], ...]
  level_name: str | None
  level: Any
  runs: list[Run]
  missing_seeds: list[Any] = dataclasses.field(default_factory=list)
  fewer_seeds: bool = False

  @property
  def n(self) -> int:
    return len(self.runs)

  @property
  def seeds(self) -> list[Any]:
    return sorted((r.seed for r in self.runs), key=_seed_sort_key)

  @property
  def label(self) -> str:
    """Variant and split, e.g. "mode=kd; epochs=100"; "" when neither applies."""
    return "; ".join(f"{k}={v}" for k, v in self.variant + self.split)

  @property
  def line_key(self) -> tuple:
    return (self.variant, self.split)

  def option(self, name: str) -> Any:
    """The option's value if every run of the group has the same one, else None."""
    values = {json.dumps(r.options.get(name), sort_keys=True) for r in self.runs}
    return json.loads(values.pop()) if len(values) == 1 else None

  def stat(self, key: tuple) -> Stat | None:
    values = [r.metrics[key] for r in self.runs if key in r.metrics]
    return mean_std(values) if values else None

  def seeds_without(self, key: tuple) -> list[Any]:
    return sorted((r.seed for r in self.runs if key not in r.metrics), key=_seed_sort_key)

  def sort_key(self) -> tuple:
    return (self.experiment, self.variant, self.split, self.level_name or "",
            _level_sort_key(self.level))

  def title(self) -> str:
    parts = [self.experiment]
    if self.label:
      parts.append(f"[{self.label}]")
    parts.append(f"{self.level_name or 'level'}={_fmt_level(self.level) or 'none'}")
    return " ".join(parts)


def _setting_order(name: str) -> tuple:
  if name in BASE_SETTINGS:
    return (0, BASE_SETTINGS.index(name), name)
  match = re.fullmatch(r"pgd(\d+)_eps", name)
  return (1, int(match.group(1)) if match else 0, name)


def group_runs(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
  """Groups runs; returns the groups (sorted) and notes on what was split or doubtful."""
  notes: list[str] = []
  by_experiment: dict[str, list[Run]] = {}
  for run in runs:
    by_experiment.setdefault(run.experiment, []).append(run)

  for experiment_runs in by_experiment.values():
    varying = [name for name in VARIANT_OPTIONS
               if len({json.dumps(r.options.get(name), sort_keys=True)
                       for r in experiment_runs}) > 1]
    for run in experiment_runs:
      run.variant = tuple((name, _fmt_option(run.options.get(name))) for name in varying)

  base: dict[tuple, list[Run]] = {}
  for run in runs:
    key = (run.experiment, run.variant, run.level_name or "", _level_sort_key(run.level))
    base.setdefault(key, []).append(run)

  # Settings that disagree inside a group split every group of that experiment and variant.
  conflicts: dict[tuple, set[str]] = {}
  for key in sorted(base):
    group_runs_ = base[key]
    names = sorted({s for r in group_runs_ for s in r.settings}, key=_setting_order)
    for name in names:
      values: dict[str, list[str]] = {}
      for run in group_runs_:
        if name in run.settings:
          values.setdefault(run.settings[name], []).append(run.name)
      if len(values) > 1:
        conflicts.setdefault(key[:2], set()).add(name)
        first = group_runs_[0]
        where = Group(first.experiment, first.variant, (), first.level_name, first.level,
                      []).title()
        listing = "; ".join(f"{name}={value}: {', '.join(sorted(names_))}"
                            for value, names_ in sorted(values.items()))
        message = (f"{where}: runs differ in {name} ({listing}); reported as separate rows "
                   f"labelled '{name}=...', not averaged together")
        warn(message)
        notes.append(message)

  groups_by_key: dict[tuple, Group] = {}
  for run in runs:
    fields = sorted(conflicts.get((run.experiment, run.variant), ()), key=_setting_order)
    run.split = tuple((name, run.settings.get(name, "?")) for name in fields)
    key = (run.experiment, run.variant, run.split, run.level_name or "",
           _level_sort_key(run.level))
    if key not in groups_by_key:
      groups_by_key[key] = Group(run.experiment, run.variant, run.split, run.level_name,
                                 run.level, [])
    groups_by_key[key].runs.append(run)
  groups = sorted(groups_by_key.values(), key=Group.sort_key)

  for experiment, experiment_runs in sorted(by_experiment.items()):
    seeds = {_fmt_seed(r.seed): r.seed for r in experiment_runs}
    members = [g for g in groups if g.experiment == experiment]
    largest = max(g.n for g in members)
    for group in members:
      present = {_fmt_seed(s) for s in group.seeds}
      group.missing_seeds = sorted((s for k, s in seeds.items() if k not in present),
                                   key=_seed_sort_key)
      group.fewer_seeds = group.n < largest
      counts: dict[str, list[str]] = {}
      for run in group.runs:
        counts.setdefault(_fmt_seed(run.seed), []).append(run.name)
      for seed, names in sorted(counts.items()):
        if len(names) > 1:
          message = (f"{group.title()}: seed {seed} appears in {len(names)} runs "
                     f"({', '.join(names)}); each is counted")
          warn(message)
          notes.append(message)
  return groups, notes


# ---------------------------------------------------------------------------------------------
# Tables.


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
  columns = [Column(("test_accuracy",), "test acc.", "test_accuracy", 2),
             Column(("cinic_accuracy",), "CINIC ImageNet acc.", "cinic_accuracy", 2)]
  for steps, eps in sorted(pgd):
    columns.append(Column(("pgd", steps, eps, "robust"), f"PGD-{steps} ε={_fmt_number(eps)}",
                          f"pgd{steps}_eps{_fmt_number(eps)}_robust", 2))
  columns += [Column(("c10c_mean_15",), "CIFAR-10-C mean-15", "c10c_mean_15", 2),
              Column(("c10c_mean_19",), "CIFAR-10-C mean-19", "c10c_mean_19", 2),
              Column(("ece",), "ECE", "ece", 2)]
  return columns


def _fmt_stat(stat: Stat | None, decimals: int) -> str:
  if stat is None:
    return DASH
  std = DASH if stat.std is None else f"{stat.std:.{decimals}f}"
  return f"{stat.mean:.{decimals}f} ± {std}"


def _c10c_sources(group: Group) -> str:
  sources = sorted({str(r.results["cifar10_c"].get("source")) for r in group.runs
                    if isinstance(r.results.get("cifar10_c"), dict)})
  return ",".join(sources)


def _md_cell(text: str) -> str:
  return text.replace("|", "\\|") if text else DASH


def summary_markdown(groups: Sequence[Group], columns: Sequence[Column],
                     notes: Sequence[str]) -> str:
  out = io.StringIO()
  out.write("# nkd results summary\n\n")
  out.write(
      "Each cell: mean ± sample standard deviation (ddof=1) over seeds; the std is "
      f"\"{DASH}\" with one seed. A cell that is only \"{DASH}\": no run of the group reported "
      "that metric. \"(n=k)\": only k of the row's runs reported it. "
      f"{DAGGER} after n: the group has fewer seeds than the largest group of its experiment "
      "(the missing seeds are listed under the table). Accuracies in %; ECE (15 bins) in % "
      "as nkd.evaluation reports it; PGD = per-example worst case over restarts (`robust_accuracy`); CIFAR-10-C "
      "mean-15 = the 15 standard corruptions x 5 severities, mean-19 = all 19. Runs are named "
      "by their path relative to the common parent folder.\n")
  headers = (["variant / split", "level name", "level", "n", "seeds"]
             + [c.header for c in columns] + ["CIFAR-10-C source"])
  for experiment in sorted({g.experiment for g in groups}):
    members = [g for g in groups if g.experiment == experiment]
    out.write(f"\n## {experiment}\n\n")
    out.write("| " + " | ".join(headers) + " |\n")
    out.write("|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 4) + ["---"]) + "|\n")
    for group in members:
      cells = [_md_cell(group.label), _md_cell(group.level_name or ""),
               _md_cell(_fmt_level(group.level)),
               f"{group.n}{' ' + DAGGER if group.fewer_seeds else ''}",
               ",".join(_fmt_seed(s) for s in group.seeds)]
      for column in columns:
        stat = group.stat(column.key)
        text = _fmt_stat(stat, column.decimals)
        if stat is not None and stat.n < group.n:
          text += f" (n={stat.n})"
        cells.append(text)
      cells.append(_md_cell(_c10c_sources(group)))
      out.write("| " + " | ".join(cells) + " |\n")
    short = [g for g in members if g.missing_seeds]
    if short:
      out.write("\nMissing seeds (present elsewhere in this experiment):\n")
      for group in short:
        seeds = ", ".join(_fmt_seed(s) for s in group.missing_seeds)
        out.write(f"- {group.title()}: {seeds}\n")
    partial = [(g, c) for g in members for c in columns
               if 0 < (g.stat(c.key).n if g.stat(c.key) else 0) < g.n]
    if partial:
      out.write("\nMetrics missing from some runs of a group:\n")
      for group, column in partial:
        seeds = ", ".join(_fmt_seed(s) for s in group.seeds_without(column.key))
        out.write(f"- {group.title()}: {column.header} missing for seed(s) {seeds}\n")
  if notes:
    out.write("\n## Warnings\n\n")
    for note in notes:
      out.write(f"- {note}\n")
  return out.getvalue()


def _csv_number(value: float | None) -> str:
  return "" if value is None else f"{value:.6f}"


def summary_csv(groups: Sequence[Group], columns: Sequence[Column]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  header = ["experiment", "variant", "level_name", "level", "n", "seeds", "missing_seeds",
            "fewer_seeds"]
  for column in columns:
    header += [f"{column.csv_name}_mean", f"{column.csv_name}_std", f"{column.csv_name}_n"]
  writer.writerow(header + ["c10c_source"])
  for group in groups:
    row = [group.experiment, group.label, group.level_name or "", _fmt_level(group.level),
           str(group.n), ";".join(_fmt_seed(s) for s in group.seeds),
           ";".join(_fmt_seed(s) for s in group.missing_seeds),
           DAGGER if group.fewer_seeds else ""]
    for column in columns:
      stat = group.stat(column.key)
      row += ([_csv_number(stat.mean), _csv_number(stat.std), str(stat.n)] if stat
              else ["", "", "0"])
    writer.writerow(row + [_c10c_sources(group)])
  return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Ours vs the paper.


def _level_matches(level: Any, accepted: Sequence[Any]) -> bool:
  number = _number(level)
  for want in accepted:
    if want is None and level is None:
      return True
    if want is not None and number is not None and abs(number - want) < 1e-9:
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


def paper_comparison_markdown(groups: Sequence[Group],
                              values: dict[str, dict[str, Any]] | None = None) -> str:
  values = paper_values_lib.PAPER_VALUES if values is None else values
  rows: list[list[str]] = []
  not_compared: list[str] = []
  for key, entry in values.items():
    matched = [g for g in groups if any(_selector_matches(g, s) for s in entry["match"])]
    found = False
    for group in matched:
      metrics: list[tuple[tuple, str]] = []
      if entry["metric"] in ("test_accuracy", "cinic_accuracy"):
        metrics.append(((entry["metric"],), entry["metric"]))
      elif entry["metric"] == "c10c":
        metrics.append((("c10c", entry["corruption"]),
                        f"CIFAR-10-C {entry['corruption']}, mean over severities"))
      else:
        eps = _eps_key(entry["pgd_eps"])
        steps = sorted({k[1] for r in group.runs for k in r.metrics
                        if k[0] == "pgd" and k[2] == eps
                        and entry["pgd_steps"] in (None, k[1])})
        for step in steps:
          metrics.append((("pgd", step, eps, "robust"),
                          f"PGD-{step} ε={_fmt_number(eps)} robust_accuracy (per-example worst)"))
          metrics.append((("pgd", step, eps, "worst_restart"),
                          f"PGD-{step} ε={_fmt_number(eps)} worst_restart_accuracy "
                          "(paper's protocol)"))
      for metric_key, metric_label in metrics:
        stat = group.stat(metric_key)
        if stat is None:
          continue
        found = True
        rows.append([entry["quantity"], metric_label, _fmt_paper(entry["value"]),
                     _fmt_stat(stat, 2), str(stat.n),
                     _fmt_difference(stat.mean, entry["value"]), group.title(),
                     entry.get("note", "")])
    if not found:
      not_compared.append(f"{key}: {entry['quantity']}")

  out = io.StringIO()
  out.write("# nkd vs the paper\n\n")
  out.write(
      "Paper: the published values in `nkd/paper_values.py` (ANCHORS.md, read off the "
      "submission's figures: approximate). Ours: mean ± sample standard deviation (ddof=1) "
      "over n seeds, in %. Difference: ours − paper; for a range, the distance to its nearest "
      "end (0 inside). Only quantities that exist in these runs are listed.\n\n")
  if rows:
    out.write("| quantity | our metric | paper | ours | n | ours − paper | our group | note |\n")
    out.write("|---|---|---:|---:|---:|---:|---|---|\n")
    for row in rows:
      out.write("| " + " | ".join(_md_cell(c) if c else "" for c in row) + " |\n")
  else:
    out.write("No published quantity matches these runs.\n")
  if not_compared:
    out.write("\nNot compared (no matching runs or metric):\n")
    for line in not_compared:
      out.write(f"- {line}\n")
  return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Figures.


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def _is_numeric_level(level: Any) -> bool:
  return _number(level) is not None


class _FigureWriter:
  """Draws with matplotlib's object API on the Agg canvas; saves PNG and PDF without dates."""

  def __init__(self, out_dir: str):
    self.out_dir = out_dir
    self.written: list[str] = []

  def new(self, ncols: int = 1, width: float = 4.2, height: float = 3.2):
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes

  def style(self):
    rc = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "svg.hashsalt": "nkd",
          "pdf.fonttype": 42}
    return matplotlib.rc_context(rc)

  def save(self, fig, stem: str) -> None:
    png = os.path.join(self.out_dir, stem + ".png")
    pdf = os.path.join(self.out_dir, stem + ".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.savefig(pdf, metadata={"Creator": None, "Producer": None, "CreationDate": None})
    self.written += [os.path.basename(png), os.path.basename(pdf)]


def _plot_lines(ax, lines: dict[str, list[Group]], metric: tuple, references: Sequence[Group],
                ylabel: str, xlabel: str) -> bool:
  """Error-bar lines, x = level, one per label; returns whether anything was drawn."""
  drawn = False
  for index, (label, members) in enumerate(lines.items()):
    points = [(float(g.level), g.stat(metric)) for g in members]
    points = sorted((x, s) for x, s in points if s is not None)
    if not points:
      continue
    ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                yerr=[s.std or 0.0 for _, s in points], marker="o", markersize=3, capsize=3,
                color=f"C{index % 10}", label=label or None)
    drawn = True
  if drawn:
    for reference in references:
      stat = reference.stat(metric)
      if stat is not None:
        label = reference.experiment + (f" [{reference.label}]" if reference.label else "")
        ax.axhline(stat.mean, color="gray", linestyle="--", linewidth=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, linewidth=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  return drawn


def _xlabel(groups: Sequence[Group]) -> str:
  names = sorted({g.level_name for g in groups if g.level_name})
  return names[0] if len(names) == 1 else "noise level"


def _line_figure(writer: _FigureWriter, stem: str, title: str, lines: dict[str, list[Group]],
                 references: Sequence[Group]) -> None:
  members = [g for gs in lines.values() for g in gs]
  panels = [(("test_accuracy",), "test accuracy (%)")]
  if any(g.stat(("cinic_accuracy",)) for g in members):
    panels.append((("cinic_accuracy",), "CINIC ImageNet accuracy (%)"))
  with writer.style():
    fig, axes = writer.new(ncols=len(panels))
    drawn = [_plot_lines(ax, lines, metric, references, ylabel, _xlabel(members))
             for ax, (metric, ylabel) in zip(axes, panels)]
    if any(drawn):
      fig.suptitle(title)
      writer.save(fig, stem)


def _heatmap_figure(writer: _FigureWriter, stem: str, title: str, groups: Sequence[Group],
                    rows: Sequence[tuple[tuple, str]], colorbar_label: str) -> None:
  matrix = np.full((len(rows), len(groups)), np.nan)
  for j, group in enumerate(groups):
    for i, (key, _) in enumerate(rows):
      stat = group.stat(key)
      if stat is not None:
        matrix[i, j] = stat.mean
  if not np.isfinite(matrix).any():
    return
  with writer.style():
    fig, (ax,) = writer.new(width=max(3.0, 1.2 + 0.7 * len(groups)),
                            height=max(2.2, 0.9 + 0.28 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis")
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2
    for i in range(len(rows)):
      for j in range(len(groups)):
        if np.isfinite(matrix[i, j]):
          ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", fontsize=6,
                  color="white" if matrix[i, j] < middle else "black")
    ax.set_xticks(range(len(groups)), [_fmt_level(g.level) or "none" for g in groups])
    ax.set_yticks(range(len(rows)), [label for _, label in rows])
    ax.set_xlabel(_xlabel(groups))
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    writer.save(fig, stem)


def _lines_by(groups: Sequence[Group], label_of) -> dict[str, list[Group]]:
  lines: dict[str, list[Group]] = {}
  for group in groups:
    lines.setdefault(label_of(group), []).append(group)
  return dict(sorted(lines.items()))


def write_figures(groups: Sequence[Group], out_dir: str) -> list[str]:
  """Writes every figure whose data exists; returns the file names written."""
  writer = _FigureWriter(out_dir)
  references = [g for g in groups if g.experiment in REFERENCE_EXPERIMENTS and g.level is None]
  experiments = sorted({g.experiment for g in groups})

  # Figures 1-3: accuracy and CINIC accuracy vs noise level, per experiment.
  for experiment in experiments:
    members = [g for g in groups if g.experiment == experiment and _is_numeric_level(g.level)]
    refs = [r for r in references if r.experiment != experiment]
    _line_figure(writer, f"fig_accuracy_{_slug(experiment)}", experiment,
                 _lines_by(members, lambda g: g.label), refs)

  # Figures 4-6, 10, 11: heatmaps per experiment and variant / split.
  for experiment in experiments:
    lines: dict[tuple, list[Group]] = {}
    for group in groups:
      if group.experiment == experiment:
        lines.setdefault(group.line_key, []).append(group)
    for line_key, members in sorted(lines.items()):
      members = sorted(members, key=lambda g: _level_sort_key(g.level))
      label = members[0].label
      stem_tail = f"{_slug(experiment)}" + (f"__{_slug(label)}" if label else "")
      title = experiment + (f" [{label}]" if label else "")
      pgd = sorted({(k[1], k[2]) for g in members for r in g.runs for k in r.metrics
                    if k[0] == "pgd"})
      _heatmap_figure(writer, f"fig_pgd_{stem_tail}", title + "\nPGD robustness (%)", members,
                      [(("pgd", s, e, "robust"), f"PGD-{s} ε={_fmt_number(e)}") for s, e in pgd],
                      "robust accuracy (%)")
      names = {k[1] for g in members for r in g.runs for k in r.metrics if k[0] == "c10c"}
      ordered = [c for c in ALL_CORRUPTIONS if c in names] + sorted(names - set(ALL_CORRUPTIONS))
      rows = [(("c10c", c), c) for c in ordered]
      if names:
        rows += [(("c10c_mean_15",), "mean (15)"), (("c10c_mean_19",), "mean (19)")]
      _heatmap_figure(writer, f"fig_cifar10c_{stem_tail}", title + "\nCIFAR-10-C accuracy (%)",
                      members, rows, "accuracy (%), mean over severities")

  # Figures 7, 8: label corruption, one line per mode; re-drawn each epoch vs fixed.
  def label_noise(group: Group) -> bool:
    return (group.option("label_noise_mode") in LABEL_NOISE_MODES
            and _is_numeric_level(group.level)
            and "label" in (group.level_name or "") + group.experiment)

  for fixed, stem in ((False, "fig_label_corruption"), (True, "fig_label_corruption_fixed")):
    members = [g for g in groups if label_noise(g) and bool(g.option("label_noise_fixed")) == fixed]
    _line_figure(writer, stem, "label corruption" + (" (fixed)" if fixed else ""),
                 _mode_lines(members, "label_noise_mode", LABEL_NOISE_MODES), references)

  # Figure 9: random swapping, top-2 vs all.
  members = [g for g in groups if g.option("swap_mode") in SWAP_MODES
             and _is_numeric_level(g.level)
             and "swap" in (g.level_name or "") + g.experiment]
  _line_figure(writer, "fig_swap", "random swapping", _mode_lines(members, "swap_mode", SWAP_MODES),
               references)
  return writer.written


def _mode_lines(groups: Sequence[Group], option: str, order: Sequence[str]
                ) -> dict[str, list[Group]]:
  """One line per mode; modes fed by more than one experiment / variant are told apart."""
  sources: dict[str, set[tuple]] = {}
  for group in groups:
    sources.setdefault(group.option(option), set()).add((group.experiment,) + group.line_key)

  def label(group: Group) -> str:
    mode = group.option(option)
    if len(sources[mode]) == 1:
      return mode
    rest = "; ".join(f"{k}={v}" for k, v in group.variant + group.split
                     if k not in (option, "label_noise_fixed"))
    return f"{mode} ({group.experiment}{'; ' + rest if rest else ''})"

  lines = _lines_by(groups, label)
  return dict(sorted(lines.items(), key=lambda kv: (order.index(kv[1][0].option(option)), kv[0])))


# ---------------------------------------------------------------------------------------------
# Entry point.


def write_report(paths: Sequence[str], out_dir: str, figures: bool = True) -> list[str]:
  """Writes the tables (and figures) for the runs under `paths`; returns the file names."""
  runs = load_runs(paths)
  groups, notes = group_runs(runs)
  columns = table_columns(runs)
  os.makedirs(out_dir, exist_ok=True)
  tables = {
      "summary.md": summary_markdown(groups, columns, notes),
      "summary.csv": summary_csv(groups, columns),
      "paper_comparison.md": paper_comparison_markdown(groups),
  }
  for name, text in tables.items():
    with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
      f.write(text)
  written = list(tables)
  if figures:
    written += write_figures(groups, out_dir)
  print(f"nkd.report: {len(runs)} runs in {len(groups)} groups -> {out_dir}: "
        + ", ".join(written))
  return written


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m nkd.report",
      description="Summarise nkd run folders into tables, figures and a comparison with the "
                  "paper.")
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                      help="run folders, or folders searched recursively for run folders")
  parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
  parser.add_argument("--no-figures", action="store_true", help="write the tables only")
  args = parser.parse_args(argv)
  try:
    write_report(args.run_dirs, args.out, figures=not args.no_figures)
  except ReportError as e:
    print(f"nkd.report: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
