"""The paper's figures, each drawn only when its data exists (PNG and PDF, without dates, so the
same runs give the same bytes):

  fig_accuracy_<exp>             test / CINIC accuracy vs noise level (Figures 1-3).
  fig_pgd_<exp>[__<variant>]     PGD robustness, PGD steps x level (Figure 4).
  fig_cifar10_c_<exp>[__<var>]   CIFAR-10-C accuracy, corruption x level (Figures 5, 6, 10, 11).
  fig_cifar10_c_relative_<exp>.. the same relative to clean accuracy (corrupted / clean x 100),
                                 as the paper's Figure 5 most likely reads.
  fig_label_corruption[_fixed]   test accuracy vs p, one line per mode T/S/TS (Figures 7, 8).
  fig_swap                       test accuracy vs p, top-2 vs all swaps (Figure 9).
  fig_robustness_<exp>           robust accuracy vs noise level: the paper's PGD (most steps)
                                 and AutoAttack at the same eps, side by side (beyond the paper).
  fig_certified                  randomized smoothing: certified accuracy vs L2 radius, one
                                 line per noise level; students trained alone and distilled
                                 side by side (beyond the paper).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from nkd.config.evaluation import CORRUPTIONS
from nkd.report.grouping import Group, fmt_level, level_sort_key
from nkd.report.loading import fmt_number, number

# Experiments drawn as dashed reference lines in the accuracy-vs-level figures.
REFERENCE_EXPERIMENTS = ("hinton",)
LABEL_NOISE_MODES = ("T", "S", "TS")
SWAP_MODES = ("top2", "all")


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def _is_numeric_level(level: Any) -> bool:
  return number(level) is not None


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
    rc = {
        "font.size": 8,
        "axes.titlesize": 9,
        "legend.fontsize": 7,
        "svg.hashsalt": "nkd",
        "pdf.fonttype": 42,
    }
    return matplotlib.rc_context(rc)

  def save(self, fig, stem: str) -> None:
    png = os.path.join(self.out_dir, stem + ".png")
    pdf = os.path.join(self.out_dir, stem + ".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.set_layout_engine("none")  # the PDF keeps the PNG's layout, computed once
    fig.savefig(pdf, metadata={"Creator": None, "Producer": None, "CreationDate": None})
    self.written += [os.path.basename(png), os.path.basename(pdf)]


def _plot_lines(
    ax,
    lines: dict[str, list[Group]],
    metric: tuple,
    references: Sequence[Group],
    ylabel: str,
    xlabel: str,
) -> bool:
  """Error-bar lines, x = level, one per label; returns whether anything was drawn."""
  drawn = False
  for index, (label, members) in enumerate(lines.items()):
    points = [(float(g.level), g.stat(metric)) for g in members]
    points = sorted((x, s) for x, s in points if s is not None)
    if not points:
      continue
    ax.errorbar(
        [x for x, _ in points],
        [s.mean for _, s in points],
        yerr=[s.std or 0.0 for _, s in points],
        marker="o",
        markersize=3,
        capsize=3,
        color=f"C{index % 10}",
        label=label or None,
    )
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


def _line_figure(
    writer: _FigureWriter,
    stem: str,
    title: str,
    lines: dict[str, list[Group]],
    references: Sequence[Group],
) -> None:
  members = [g for gs in lines.values() for g in gs]
  panels = [(("test_accuracy",), "test accuracy (%)")]
  if any(g.stat(("cinic_accuracy",)) for g in members):
    panels.append((("cinic_accuracy",), "CINIC ImageNet accuracy (%)"))
  with writer.style():
    fig, axes = writer.new(ncols=len(panels))
    drawn = [
        _plot_lines(ax, lines, metric, references, ylabel, _xlabel(members))
        for ax, (metric, ylabel) in zip(axes, panels)
    ]
    if any(drawn):
      fig.suptitle(title)
      writer.save(fig, stem)


def _heatmap_figure(
    writer: _FigureWriter,
    stem: str,
    title: str,
    groups: Sequence[Group],
    rows: Sequence[tuple[tuple, str]],
    colorbar_label: str,
) -> None:
  matrix = np.full((len(rows), len(groups)), np.nan)
  for j, group in enumerate(groups):
    for i, (key, _) in enumerate(rows):
      stat = group.stat(key)
      if stat is not None:
        matrix[i, j] = stat.mean
  if not np.isfinite(matrix).any():
    return
  with writer.style():
    fig, (ax,) = writer.new(
        width=max(3.0, 1.2 + 0.7 * len(groups)), height=max(2.2, 0.9 + 0.28 * len(rows))
    )
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis")
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2
    for i in range(len(rows)):
      for j in range(len(groups)):
        if np.isfinite(matrix[i, j]):
          ax.text(
              j,
              i,
              f"{matrix[i, j]:.1f}",
              ha="center",
              va="center",
              fontsize=6,
              color="white" if matrix[i, j] < middle else "black",
          )
    ax.set_xticks(range(len(groups)), [fmt_level(g.level) or "none" for g in groups])
    ax.set_yticks(range(len(rows)), [label for _, label in rows])
    ax.set_xlabel(_xlabel(groups))
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    writer.save(fig, stem)


def _lines_by(groups: Sequence[Group], label_of: Callable[[Group], str]) -> dict[str, list[Group]]:
  lines: dict[str, list[Group]] = {}
  for group in groups:
    lines.setdefault(label_of(group), []).append(group)
  return dict(sorted(lines.items()))


def _mode_lines(
    groups: Sequence[Group], option: str, order: Sequence[str]
) -> dict[str, list[Group]]:
  """One line per mode; modes fed by more than one experiment / variant are told apart."""
  sources: dict[str, set[tuple]] = {}
  for group in groups:
    sources.setdefault(group.option(option), set()).add((group.experiment,) + group.line_key)

  def label(group: Group) -> str:
    mode = group.option(option)
    if len(sources[mode]) == 1:
      return mode
    rest = "; ".join(
        f"{k}={v}" for k, v in group.variant + group.split if k not in (option, "label_noise_fixed")
    )
    return f"{mode} ({group.experiment}{'; ' + rest if rest else ''})"

  lines = _lines_by(groups, label)
  return dict(sorted(lines.items(), key=lambda kv: (order.index(kv[1][0].option(option)), kv[0])))


def _heatmaps(writer: _FigureWriter, experiment: str, members: list[Group]) -> None:
  """Figures 4-6, 10, 11: PGD and CIFAR-10-C heatmaps of one experiment's variant / split."""
  members = sorted(members, key=lambda g: level_sort_key(g.level))
  label = members[0].label
  stem_tail = f"{_slug(experiment)}" + (f"__{_slug(label)}" if label else "")
  title = experiment + (f" [{label}]" if label else "")
  metric_keys = [k for g in members for r in g.runs for k in r.metrics]
  pgd = sorted({(k[1], k[2]) for k in metric_keys if k[0] == "pgd"})
  _heatmap_figure(
      writer,
      f"fig_pgd_{stem_tail}",
      title + "\nPGD robustness (%)",
      members,
      [(("pgd", s, e, "robust"), f"PGD-{s} ε={fmt_number(e)}") for s, e in pgd],
      "robust accuracy (%)",
  )
  names = {k[1] for k in metric_keys if k[0] == "cifar10_c"}
  ordered = [c for c in CORRUPTIONS if c in names] + sorted(names - set(CORRUPTIONS))
  rows = [(("cifar10_c", c), c) for c in ordered]
  if names:
    rows += [(("cifar10_c_mean_15",), "mean (15)"), (("cifar10_c_mean_19",), "mean (19)")]
  _heatmap_figure(
      writer,
      f"fig_cifar10_c_{stem_tail}",
      title + "\nCIFAR-10-C accuracy (%)",
      members,
      rows,
      "accuracy (%), mean over severities",
  )
  relative_rows = [
      (("cifar10_c_relative" + key[0][len("cifar10_c") :],) + key[1:], label) for key, label in rows
  ]
  _heatmap_figure(
      writer,
      f"fig_cifar10_c_relative_{stem_tail}",
      title + "\nCIFAR-10-C accuracy relative to clean (%)",
      members,
      relative_rows,
      "corrupted / clean x 100, mean over severities",
  )


def write_figures(groups: Sequence[Group], out_dir: str) -> list[str]:
  """Writes every figure whose data exists; returns the file names written."""
  writer = _FigureWriter(out_dir)
  references = [g for g in groups if g.experiment in REFERENCE_EXPERIMENTS and g.level is None]
  experiments = sorted({g.experiment for g in groups})

  # Figures 1-3: accuracy and CINIC accuracy vs noise level, per experiment.
  for experiment in experiments:
    members = [g for g in groups if g.experiment == experiment and _is_numeric_level(g.level)]
    refs = [r for r in references if r.experiment != experiment]
    _line_figure(
        writer,
        f"fig_accuracy_{_slug(experiment)}",
        experiment,
        _lines_by(members, lambda g: g.label),
        refs,
    )

  # Figures 4-6, 10, 11: heatmaps per experiment and variant / split.
  for experiment in experiments:
    lines: dict[tuple, list[Group]] = {}
    for group in groups:
      if group.experiment == experiment:
        lines.setdefault(group.line_key, []).append(group)
    for _, members in sorted(lines.items()):
      _heatmaps(writer, experiment, members)

  # Figures 7, 8: label corruption, one line per mode; re-drawn each epoch vs fixed.
  def label_noise(group: Group) -> bool:
    return (
        group.option("label_noise_mode") in LABEL_NOISE_MODES
        and _is_numeric_level(group.level)
        and "label" in (group.level_name or "") + group.experiment
    )

  for fixed, stem in ((False, "fig_label_corruption"), (True, "fig_label_corruption_fixed")):
    members = [g for g in groups if label_noise(g) and bool(g.option("label_noise_fixed")) == fixed]
    _line_figure(
        writer,
        stem,
        "label corruption" + (" (fixed)" if fixed else ""),
        _mode_lines(members, "label_noise_mode", LABEL_NOISE_MODES),
        references,
    )

  # Figure 9: random swapping, top-2 vs all.
  members = [
      g
      for g in groups
      if g.option("swap_mode") in SWAP_MODES
      and _is_numeric_level(g.level)
      and "swap" in (g.level_name or "") + g.experiment
  ]
  _line_figure(
      writer,
      "fig_swap",
      "random swapping",
      _mode_lines(members, "swap_mode", SWAP_MODES),
      references,
  )
  for experiment in experiments:
    _robustness_figure(
        writer,
        experiment,
        [g for g in groups if g.experiment == experiment and _is_numeric_level(g.level)],
    )
  _certified_figure(writer, groups)
  return writer.written


def _robustness_figure(writer: _FigureWriter, experiment: str, members: Sequence[Group]) -> None:
  """PGD (its largest step count) and AutoAttack robust accuracy against the noise level, one
  panel per eps at which both were measured."""
  keys = {k for g in members for run in g.runs for k in run.metrics}
  aa_eps = sorted({k[1] for k in keys if k[0] == "autoattack"})
  panels = []
  for eps in aa_eps:
    steps = sorted(k[1] for k in keys if k[0] == "pgd" and k[2] == eps and k[3] == "robust")
    if steps:
      panels.append((eps, steps[-1]))
  if not panels:
    return
  with writer.style():
    fig, axes = writer.new(ncols=len(panels))
    for ax, (eps, steps) in zip(axes, panels):
      lines = {f"PGD-{steps}": ("pgd", steps, eps, "robust"), "AutoAttack": ("autoattack", eps)}
      for index, (label, key) in enumerate(lines.items()):
        points = sorted((float(g.level), g.stat(key)) for g in members if g.stat(key))
        if points:
          ax.errorbar(
              [x for x, _ in points],
              [s.mean for _, s in points],
              yerr=[s.std or 0.0 for _, s in points],
              marker="o",
              markersize=3,
              capsize=3,
              color=f"C{index}",
              label=label,
          )
      ax.set_title(f"{experiment}: robust accuracy, eps={fmt_number(eps)}")
      ax.set_xlabel(members[0].level_name or "level")
      ax.set_ylabel("robust accuracy (%)")
      ax.legend()
    writer.save(fig, f"fig_robustness_{_slug(experiment)}")


def _radii(group: Group) -> list[float]:
  return sorted({k[1] for run in group.runs for k in run.metrics if k[0] == "certified"})


def _certified_figure(writer: _FigureWriter, groups: Sequence[Group]) -> None:
  """Certified accuracy vs radius: panel 'trained alone' (mode ce) and 'distilled' (mode kd),
  one line (mean +- std over seeds) per noise level."""
  members = [g for g in groups if _radii(g)]
  if not members:
    return
  panels = [
      (title, [g for g in members if g.option("mode") == mode])
      for title, mode in (("trained alone", "ce"), ("distilled", "kd"))
  ]
  panels = [(title, gs) for title, gs in panels if gs]
  with writer.style():
    fig, axes = writer.new(ncols=len(panels))
    for ax, (title, panel) in zip(axes, panels):
      for index, group in enumerate(sorted(panel, key=lambda g: level_sort_key(g.level))):
        radii = _radii(group)
        stats = [group.stat(("certified", r)) for r in radii]
        points = [(r, s) for r, s in zip(radii, stats) if s is not None]
        level = fmt_level(group.level) if group.level is not None else "-"
        ax.errorbar(
            [r for r, _ in points],
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            marker="o",
            markersize=3,
            capsize=3,
            color=f"C{index % 10}",
            label=f"{group.experiment} {group.level_name or 'level'}={level}",
        )
      ax.set_title(f"certified accuracy, {title}")
      ax.set_xlabel("L2 radius (pixels in [0, 1])")
      ax.set_ylabel("certified accuracy (%)")
      ax.legend()
    low = min(ax.get_ylim()[0] for ax in axes)
    high = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:  # one scale, so the panels compare at a glance
      ax.set_ylim(low, high)
    writer.save(fig, "fig_certified")
