"""The run plan: every grid point as a Run (its flags, folder, command and, once run, its
outcome), and the state its folder is in (new, partial, finished, or another config's)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
import sys
from typing import Any, Sequence

from nkd import config as config_lib
from nkd import run_files
from nkd.errors import NkdError
from nkd.sweep.grid import point_flags, point_name, value_text

LOG = "log.txt"


@dataclasses.dataclass
class Run:
  """One grid point: its flags, folder, command and, once run, its outcome."""

  index: int
  name: str
  overrides: dict[str, str]  # option -> value text
  flags: list[str]  # nkd.main flags after --flagfile: extras, grid values, workspace, workdir
  workdir: str
  command: list[str]
  status: str = "pending"  # ok / failed / skipped / interrupted
  exit_code: int | None = None
  wall_time_s: float | None = None
  test_accuracy: float | None = None
  params_sha256: str | None = None
  last_log_line: str = ""

  def summary(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["command"] = shlex.join(self.command)
    return out


def expand(
    flagfile: str,
    grid,
    extra_flags: Sequence[str],
    workspace: str,
    sweep_name: str,
    python: str = sys.executable,
) -> list[Run]:
  """Every grid point as a Run, in --list order."""
  keys = [k for k, _ in grid]
  runs = []
  for index, values in enumerate(itertools.product(*(v for _, v in grid))):
    texts = [(k, value_text(v)) for k, v in zip(keys, values)]
    name = point_name(texts)
    workdir = os.path.join(workspace, "sweeps", sweep_name, name)
    flags_ = [
        *extra_flags,
        *point_flags({**dict(zip(keys, values)), "workspace": workspace, "workdir": workdir}),
    ]
    runs.append(
        Run(
            index=index,
            name=name,
            overrides=dict(texts),
            flags=flags_,
            workdir=workdir,
            command=[python, "-m", "nkd.main", f"--flagfile={flagfile}", *flags_],
        )
    )
  return runs


def run_config(flagfile: str, run: Run):
  """The run's resolved Config, or None where nkd.main would refuse it (it then fails there)."""
  try:
    return config_lib.parse_flagfile(flagfile, run.flags)
  except NkdError:
    return None


def run_state(flagfile: str, run: Run) -> str:
  """'finished' (results.json, same config), 'partial' (started), 'new', or 'other' (the folder
  holds a finished run of another config: nkd.main will refuse it)."""
  results = os.path.join(run.workdir, run_files.RESULTS)
  stored = os.path.join(run.workdir, run_files.CONFIG)
  if not os.path.exists(stored):
    return "new"
  if not os.path.exists(results):
    return "partial"
  config = run_config(flagfile, run)
  if config is None:
    return "other"
  try:
    theirs = run_files.read_json(stored).get("options", {})
  except NkdError:
    return "other"
  return "other" if config.differing_options(theirs) else "finished"


def read_results(run: Run) -> None:
  """Fills in the run's test accuracy and hash (and, for a skipped one, its wall time) from its
  results.json, where it can be read."""
  try:
    results = run_files.read_results(run.workdir)
  except (OSError, NkdError):
    return
  run.test_accuracy, run.params_sha256 = results.test_accuracy, results.params_sha256
  if run.status == "skipped":
    run.wall_time_s = results.wall_time_s
