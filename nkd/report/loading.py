"""Finding run folders and reading each run: its results (`nkd.run_files.RunResults`), its options
(config.json) and the metrics and settings the report groups and tabulates."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Iterable, Sequence

from nkd import run_files
from nkd.config.evaluation import CORRUPTIONS, STANDARD_CORRUPTIONS
from nkd.errors import NkdError

# Settings that must agree within a group (see nkd/report/__init__.py), in table order; PGD
# eps settings ("pgd<steps>_eps") follow them.
BASE_SETTINGS = ("epochs", "dataset", "cifar10_c_source")
_EPS_DIGITS = 6


class ReportError(NkdError):
  """Bad input: ends the report with a one-line message and a non-zero exit status."""


def warn(message: str) -> None:
  print(f"nkd.report: warning: {message}", file=sys.stderr)


@dataclasses.dataclass
class Run:
  path: str  # real path of the run folder
  options: dict[str, Any]  # config.json "options" ({} when there is no config.json)
  results: run_files.RunResults
  name: str = ""  # path relative to the common parent of all runs
  experiment: str = ""
  seed: Any = None
  level_name: str | None = None
  level: Any = None
  metrics: dict[tuple, float] = dataclasses.field(default_factory=dict)
  settings: dict[str, str] = dataclasses.field(default_factory=dict)
  variant: tuple[tuple[str, str], ...] = ()
  split: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------------
# Numbers and their text.


def number(value: Any) -> float | None:
  """A finite int or float as a float; None for anything else (bool, str, NaN, None)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def eps_key(eps: Any) -> float | None:
  """A PGD eps rounded, so that one eps read from several runs is one key."""
  eps = number(eps)
  return None if eps is None else round(eps, _EPS_DIGITS)


def fmt_number(value: float) -> str:
  return f"{value:g}"


def fmt_option(value: Any) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, float):
    return fmt_number(value)
  return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Run folders.


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
    if os.path.isfile(path) and os.path.basename(path) == run_files.RESULTS:
      path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
      warn(f"{path}: {'not a folder' if os.path.exists(path) else 'no such folder'}, skipped")
      continue
    if os.path.isfile(os.path.join(path, run_files.RESULTS)):
      found.append(os.path.realpath(path))
      continue
    if os.path.isfile(os.path.join(path, run_files.CONFIG)):
      warn(f"{path}: run folder without results.json (unfinished or failed run?), skipped")
      continue
    before = len(found)
    for root, dirs, files in os.walk(path):
      dirs.sort()
      if run_files.RESULTS in files:
        found.append(os.path.realpath(root))
        dirs[:] = []  # a run folder's subfolders are checkpoints, not runs
      elif run_files.CONFIG in files:
        warn(f"{root}: run folder without results.json (unfinished or failed run?), skipped")
        dirs[:] = []
    if len(found) == before:
      warn(f"{path}: no results.json found in it or below it, skipped")
  return sorted(set(found))


def load_run(path: str) -> Run:
  results_path = os.path.join(path, run_files.RESULTS)
  try:
    results = run_files.RunResults.from_json(_read_json(results_path))
  except NkdError as e:
    raise ReportError(f"cannot read {results_path}: {e}") from None
  config_path = os.path.join(path, run_files.CONFIG)
  options: dict[str, Any] = {}
  if os.path.isfile(config_path):
    config = _read_json(config_path)
    options = config.get("options") if isinstance(config.get("options"), dict) else {}
  else:
    warn(f"{path}: no config.json; its options are unknown")
  return Run(path=path, options=options, results=results)


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
    run.experiment = str(res.experiment or opt.get("name") or "unnamed")
    if opt.get("name") and res.experiment and opt["name"] != res.experiment:
      warn(
          f"{run.name}: results.json says experiment {res.experiment!r} but the name option "
          f"is {opt['name']!r}; using {res.experiment!r}"
      )
    run.seed, run.level_name, run.level = res.seed, res.level_name, res.level
    run.metrics, pgd_eps = extract_metrics(res, run.name)
    settings = {
        "epochs": fmt_option(res.epochs),
        "dataset": fmt_option(res.dataset),
        "cifar10_c_source": (res.cifar10_c or {}).get("source"),
    }
    for steps, eps in pgd_eps.items():
      settings[f"pgd{steps}_eps"] = ",".join(fmt_number(e) for e in sorted(eps))
    run.settings = {k: str(v) for k, v in settings.items() if v is not None}
  return sorted(runs, key=lambda r: r.name)


# ---------------------------------------------------------------------------------------------
# Metrics.


def extract_metrics(
    results: run_files.RunResults, where: str
) -> tuple[dict[tuple, float], dict[int, set[float]]]:
  """Metrics of one run, keyed by tuples, and its PGD eps per number of steps.

  Keys: ("test_accuracy",), ("cinic_accuracy",), ("ece",), ("cifar10_c_mean_15",),
  ("cifar10_c_mean_19",), ("cifar10_c", corruption), and the same relative to clean accuracy
  ("cifar10_c_relative", corruption), ("cifar10_c_relative_mean_15",), ...,
  ("pgd", steps, eps, "robust"|"worst_restart"), ("autoattack", eps) (AutoAttack robust
  accuracy), ("certified", radius) (randomized smoothing,
  certified accuracy at that L2 radius).
  A value that is present but not a finite number is treated as missing, with a warning.
  """
  metrics: dict[tuple, float] = {}

  def put(key: tuple, value: Any, label: str) -> None:
    value_ = number(value)
    if value_ is not None:
      metrics[key] = value_
    elif value is not None:
      warn(f"{where}: {label} is {value!r}, not a finite number: treated as missing")

  put(("test_accuracy",), results.test_accuracy, "test_accuracy")
  cinic = results.cinic_imagenet
  if isinstance(cinic, dict) and cinic.get("status", "ok") == "ok":
    put(("cinic_accuracy",), cinic.get("accuracy"), "cinic_imagenet.accuracy")
  if isinstance(results.calibration, dict):
    put(("ece",), results.calibration.get("ece"), "calibration.ece")
  pgd_eps = _pgd_metrics(results.pgd, put)
  if isinstance(results.cifar10_c, dict):
    _cifar10_c_metrics(results.cifar10_c, metrics, put)
    _cifar10_c_relative_metrics(results.cifar10_c, metrics)
  if isinstance(results.autoattack, dict):
    for entry in results.autoattack.get("results", []):
      eps = eps_key(entry.get("eps"))
      if eps is not None:
        put(("autoattack", eps), entry.get("robust_accuracy"), f"autoattack[eps={eps}]")
  if isinstance(results.smoothing, dict):
    for radius, value in (results.smoothing.get("certified_accuracy") or {}).items():
      try:  # JSON keys are strings: "0.25"
        key = ("certified", float(radius))
      except ValueError:
        warn(f"{where}: smoothing.certified_accuracy has a radius {radius!r}: ignored")
        continue
      put(key, value, f"smoothing.certified_accuracy[{radius}]")
  return metrics, pgd_eps


def _select_pgd(entries: Iterable[Any]) -> dict[tuple[int, float], dict[str, Any]]:
  """One PGD entry per (steps, eps): CE loss first, then the most restarts, then the first."""
  chosen: dict[tuple[int, float], tuple[tuple, dict[str, Any]]] = {}
  for index, entry in enumerate(entries):
    if not isinstance(entry, dict):
      continue
    steps, eps = number(entry.get("steps")), eps_key(entry.get("eps"))
    if steps is None or eps is None:
      continue
    rank = (entry.get("loss", "ce") != "ce", -(number(entry.get("restarts")) or 0), index)
    key = (int(steps), eps)
    if key not in chosen or rank < chosen[key][0]:
      chosen[key] = (rank, entry)
  return {key: entry for key, (_, entry) in chosen.items()}


def _pgd_metrics(pgd: dict | None, put) -> dict[int, set[float]]:
  """Puts the PGD metrics (the attacks are under "results", as nkd.evaluation.pgd writes
  them); returns the eps found per number of steps."""
  pgd_eps: dict[int, set[float]] = {}
  entries = pgd.get("results") if isinstance(pgd, dict) else None
  if not isinstance(entries, list):
    return pgd_eps
  for (steps, eps), entry in sorted(_select_pgd(entries).items()):
    pgd_eps.setdefault(steps, set()).add(eps)
    label = f"pgd steps={steps} eps={fmt_number(eps)}"
    put(("pgd", steps, eps, "robust"), entry.get("robust_accuracy"), label + " robust_accuracy")
    put(
        ("pgd", steps, eps, "worst_restart"),
        entry.get("worst_restart_accuracy"),
        label + " worst_restart_accuracy",
    )
  return pgd_eps


def _cifar10_c_metrics(section: dict[str, Any], metrics: dict[tuple, float], put) -> None:
  """Per-corruption accuracy (mean over severities) and the means over 15 and 19 corruptions,
  computed from the corruptions where the section does not give them."""
  per_corruption = section.get("mean_per_corruption")
  per_corruption = per_corruption if isinstance(per_corruption, dict) else {}
  by_severity = section.get("accuracy")
  by_severity = by_severity if isinstance(by_severity, dict) else {}
  for name in sorted(set(per_corruption) | set(by_severity)):
    value = number(per_corruption.get(name))
    severities = by_severity.get(name)
    if value is None and isinstance(severities, dict) and severities:
      values = [number(v) for v in severities.values()]
      if all(v is not None for v in values):
        value = math.fsum(values) / len(values)
    if value is not None:
      metrics[("cifar10_c", name)] = value
  for mean, names in (("mean_15", STANDARD_CORRUPTIONS), ("mean_19", CORRUPTIONS)):
    key = (f"cifar10_c_{mean}",)
    if section.get(mean) is not None:
      put(key, section.get(mean), f"cifar10_c.{mean}")
    elif all(("cifar10_c", name) in metrics for name in names):
      metrics[key] = math.fsum(metrics[("cifar10_c", name)] for name in names) / len(names)


def _cifar10_c_relative_metrics(section: dict[str, Any], metrics: dict[tuple, float]) -> None:
  """Each CIFAR-10-C metric relative to clean accuracy (corrupted / clean x 100): the section's
  clean_accuracy, else the run's test accuracy (the same model on the same images), for
  results written before the section carried it."""
  clean = number(section.get("clean_accuracy")) or metrics.get(("test_accuracy",))
  if not clean:
    return
  for key, value in list(metrics.items()):
    if key[0] == "cifar10_c":
      metrics[("cifar10_c_relative",) + key[1:]] = 100.0 * value / clean
    elif key[0] in ("cifar10_c_mean_15", "cifar10_c_mean_19"):
      metrics[(key[0].replace("cifar10_c", "cifar10_c_relative"),)] = 100.0 * value / clean
