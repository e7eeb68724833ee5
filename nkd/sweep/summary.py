"""What a sweep leaves: the table printed at the end (run, status, test accuracy, wall time)
and WORKSPACE/sweeps/NAME/sweep.json."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from nkd.fileio import write_json
from nkd.sweep.grid import value_text
from nkd.sweep.plan import Run

SWEEP_JSON = "sweep.json"
STATUSES = ("ok", "skipped", "failed", "interrupted")


def format_table(runs: Sequence[Run]) -> str:
  width = max([len("run")] + [len(r.name) for r in runs])
  header = f"{'#':>3}  {'run':<{width}}  {'status':<11} {'test acc':>8} {'time':>8}"
  lines = [header, "-" * len(header)]
  for r in runs:
    acc = f"{r.test_accuracy:.2f}%" if r.test_accuracy is not None else "-"
    secs = f"{r.wall_time_s:.0f}s" if r.wall_time_s is not None else "-"
    line = f"{r.index:>3}  {r.name:<{width}}  {r.status:<11} {acc:>8} {secs:>8}"
    if r.status in ("failed", "interrupted"):
      line += f"  exit {r.exit_code}: {r.last_log_line[:160]}"
    lines.append(line)
  return "\n".join(lines)


def write_sweep_json(
    sweep_dir: str,
    *,
    flagfile: str,
    name: str,
    workspace: str,
    grid,
    extra: Sequence[str],
    parallel: int,
    started: float,
    interrupted: bool,
    runs: Sequence[Run],
) -> None:
  """SWEEP_DIR/sweep.json: the sweep's command line, its timing and every run's outcome."""
  summary: dict[str, Any] = {
      "flagfile": flagfile,
      "name": name,
      "workspace": workspace,
      "grid": [[k, [value_text(v) for v in values]] for k, values in grid],
      "extra_flags": list(extra),
      "parallel": parallel,
      "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
      "wall_time_s": round(time.time() - started, 3),
      "interrupted": interrupted,
      "counts": {s: sum(r.status == s for r in runs) for s in STATUSES},
      "runs": [r.summary() for r in runs],
  }
  write_json(os.path.join(sweep_dir, SWEEP_JSON), summary)
