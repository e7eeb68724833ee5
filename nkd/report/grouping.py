"""Grouping runs (experiment, variant, split, noise level) and their mean ± sample std."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Sequence

from nkd.report.loading import BASE_SETTINGS, Run, fmt_number, fmt_option, number, warn

# Options that define distinct variants of one experiment when they differ between its runs.
VARIANT_OPTIONS = ("model", "mode", "label_noise_mode", "label_noise_fixed", "swap_mode")


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


def seed_sort_key(seed: Any) -> tuple:
  value = number(seed)
  return (0, value, "") if value is not None else (1, 0.0, str(seed))


def level_sort_key(level: Any) -> tuple:
  if level is None:
    return (0, 0.0, "")
  value = number(level)
  return (1, value, "") if value is not None else (2, 0.0, str(level))


def fmt_level(level: Any) -> str:
  if level is None:
    return ""
  value = number(level)
  return fmt_number(value) if value is not None else str(level)


def fmt_seed(seed: Any) -> str:
  value = number(seed)
  if value is not None and value == int(value):
    return str(int(value))
  return "?" if seed is None else str(seed)


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
    return sorted((r.seed for r in self.runs), key=seed_sort_key)

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
    return sorted((r.seed for r in self.runs if key not in r.metrics), key=seed_sort_key)

  def sort_key(self) -> tuple:
    return (
        self.experiment,
        self.variant,
        self.split,
        self.level_name or "",
        level_sort_key(self.level),
    )

  def title(self) -> str:
    parts = [self.experiment]
    if self.label:
      parts.append(f"[{self.label}]")
    parts.append(f"{self.level_name or 'level'}={fmt_level(self.level) or 'none'}")
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
    _set_variants(experiment_runs)
  conflicts = _conflicting_settings(runs, notes)

  groups_by_key: dict[tuple, Group] = {}
  for run in runs:
    fields = sorted(conflicts.get((run.experiment, run.variant), ()), key=_setting_order)
    run.split = tuple((name, run.settings.get(name, "?")) for name in fields)
    key = (run.experiment, run.variant, run.split, run.level_name or "", level_sort_key(run.level))
    if key not in groups_by_key:
      groups_by_key[key] = Group(
          run.experiment, run.variant, run.split, run.level_name, run.level, []
      )
    groups_by_key[key].runs.append(run)
  groups = sorted(groups_by_key.values(), key=Group.sort_key)
  for experiment, experiment_runs in sorted(by_experiment.items()):
    _mark_seeds([g for g in groups if g.experiment == experiment], experiment_runs, notes)
  return groups, notes


def _set_variants(experiment_runs: Sequence[Run]) -> None:
  """The variant of each run: the `VARIANT_OPTIONS` that vary within its experiment."""
  varying = [
      name
      for name in VARIANT_OPTIONS
      if len({json.dumps(r.options.get(name), sort_keys=True) for r in experiment_runs}) > 1
  ]
  for run in experiment_runs:
    run.variant = tuple((name, fmt_option(run.options.get(name))) for name in varying)


def _conflicting_settings(runs: Sequence[Run], notes: list[str]) -> dict[tuple, set[str]]:
  """{(experiment, variant): settings that disagree inside one of its groups}: they split every
  group of that experiment and variant. Each disagreement is warned about and noted."""
  base: dict[tuple, list[Run]] = {}
  for run in runs:
    key = (run.experiment, run.variant, run.level_name or "", level_sort_key(run.level))
    base.setdefault(key, []).append(run)
  conflicts: dict[tuple, set[str]] = {}
  for key in sorted(base):
    members = base[key]
    for name in sorted({s for r in members for s in r.settings}, key=_setting_order):
      values: dict[str, list[str]] = {}
      for run in members:
        if name in run.settings:
          values.setdefault(run.settings[name], []).append(run.name)
      if len(values) > 1:
        conflicts.setdefault(key[:2], set()).add(name)
        first = members[0]
        where = Group(
            first.experiment, first.variant, (), first.level_name, first.level, []
        ).title()
        listing = "; ".join(
            f"{name}={value}: {', '.join(sorted(names))}" for value, names in sorted(values.items())
        )
        message = (
            f"{where}: runs differ in {name} ({listing}); reported as separate rows "
            f"labelled '{name}=...', not averaged together"
        )
        warn(message)
        notes.append(message)
  return conflicts


def _mark_seeds(members: Sequence[Group], experiment_runs: Sequence[Run], notes: list[str]) -> None:
  """Marks the groups of one experiment that lack seeds its other groups have, and notes a
  seed that appears more than once in a group."""
  seeds = {fmt_seed(r.seed): r.seed for r in experiment_runs}
  largest = max(g.n for g in members)
  for group in members:
    present = {fmt_seed(s) for s in group.seeds}
    group.missing_seeds = sorted(
        (s for k, s in seeds.items() if k not in present), key=seed_sort_key
    )
    group.fewer_seeds = group.n < largest
    counts: dict[str, list[str]] = {}
    for run in group.runs:
      counts.setdefault(fmt_seed(run.seed), []).append(run.name)
    for seed, names in sorted(counts.items()):
      if len(names) > 1:
        message = (
            f"{group.title()}: seed {seed} appears in {len(names)} runs "
            f"({', '.join(names)}); each is counted"
        )
        warn(message)
        notes.append(message)
