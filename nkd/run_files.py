"""Run-folder files and the results schema: config.json, metrics.jsonl, results.json, and the
parameter hash.

`RunResults` is the one definition of results.json: the trainer and the evaluators write it
through `write_results`, and the report, the sweep and the test fixtures read and build it
through `RunResults.from_json` / `RunResults(...)`. Each evaluation is one section (`SECTIONS`),
named once here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from nkd.errors import DataError, NkdError
from nkd.fileio import atomic_write, write_json

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"

# results.json sections, one per evaluation: (key in results.json, what writes it).
SECTIONS = ("clean", "calibration", "pgd", "cifar10_c", "cinic_imagenet", "autoattack", "smoothing")


@dataclasses.dataclass
class TeacherRef:
  """The teacher a student was distilled from."""

  workdir: str
  test_accuracy: float | None = None
  params_sha256: str | None = None


@dataclasses.dataclass
class RunResults:
  """results.json. Accuracies are in percent; `params_sha256` identifies the final parameters
  bit for bit. Sections hold the evaluations' own JSON (see nkd/evaluation/*)."""

  experiment: str
  seed: int
  mode: str
  model: str
  dataset: str
  epochs: int
  steps: int
  test_accuracy: float
  params_sha256: str
  wall_time_s: float
  device: str = ""
  level_name: str | None = None
  level: float | None = None
  val_accuracy: float | None = None
  eval_wall_time_s: float | None = None
  teacher: TeacherRef | None = None
  # {"rule", "metric", "candidates": [{"seed", "workdir", "test_accuracy", "val_accuracy"}],
  # "chosen_seed", "chosen_workdir"} where --teacher_seeds picked the teacher.
  teacher_selection: dict | None = None
  clean: dict | None = None
  calibration: dict | None = None
  pgd: dict | None = None
  cifar10_c: dict | None = None
  cinic_imagenet: dict | None = None
  autoattack: dict | None = None
  smoothing: dict | None = None
  # Keys this version does not know (written by a newer one), kept on a round trip.
  extra: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict[str, Any]:
    out = {
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(self)
        if f.name not in ("extra", "teacher")
    }
    if self.teacher is not None:
      out["teacher"] = dataclasses.asdict(self.teacher)
    out = {k: v for k, v in out.items() if v is not None or k in ("level_name", "level")}
    return {**self.extra, **out}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "RunResults":
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    values = {k: v for k, v in data.items() if k in names}
    if isinstance(values.get("teacher"), dict):
      values["teacher"] = TeacherRef(**values["teacher"])
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
      raise NkdError(f"results.json lacks {', '.join(missing)}")
    return cls(**values, extra={k: v for k, v in data.items() if k not in names})

  def sections(self) -> dict[str, dict]:
    return {name: getattr(self, name) for name in SECTIONS if getattr(self, name) is not None}

  def with_sections(self, sections: dict[str, Any]) -> "RunResults":
    unknown = set(sections) - set(SECTIONS) - {"eval_wall_time_s"}
    if unknown:
      raise ValueError(f"unknown results sections {sorted(unknown)}")
    return dataclasses.replace(self, **sections)


def check_finished(workdir: str, option: str) -> None:
  """DataError naming `--option=workdir` unless the folder holds a finished run."""
  if not all(os.path.exists(os.path.join(workdir, name)) for name in (CONFIG, RESULTS)):
    raise DataError(
        f"--{option}={workdir} holds no finished run (expected {CONFIG} and " f"{RESULTS})"
    )


def write_results(workdir: str, results: RunResults) -> None:
  write_json(os.path.join(workdir, RESULTS), results.to_json())


def read_results(workdir: str) -> RunResults:
  return RunResults.from_json(read_json(os.path.join(workdir, RESULTS)))


def params_sha256(variables: Any) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, in tree order."""
  import jax  # pylint: disable=g-import-not-at-top  (reading and writing run files needs no JAX)

  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0]:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise NkdError(f"{path}: not valid JSON ({e})") from None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of metrics.jsonl; a last line cut short (its writer was killed, or the disk
  was full) is left out: the next run truncates it away and writes that epoch again."""
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise NkdError(f"{path}, line {i + 1}: not valid JSON") from None
  return records


def truncate_metrics(workdir: str, last_epoch: int) -> list[dict[str, Any]]:
  """Drops metric lines after `last_epoch` (written before a kill), returns those kept."""
  kept = [m for m in read_metrics(workdir) if m["epoch"] <= last_epoch]
  path = os.path.join(workdir, METRICS)
  if os.path.exists(path):
    with atomic_write(path) as f:
      f.writelines(json.dumps(m, sort_keys=True) + "\n" for m in kept)
  return kept


def append_metrics(workdir: str, record: dict[str, Any]) -> None:
  with open(os.path.join(workdir, METRICS), "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
