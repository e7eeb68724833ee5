"""Run-folder files: config.json, metrics.jsonl, results.json, and the parameter hash."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import jax
import numpy as np

from nkd.errors import NkdError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"


def params_sha256(variables: Any) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, in tree order."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0]:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def write_json(path: str, data: Any) -> None:
  """Writes JSON atomically: a reader never sees half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(f.name, path)


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise NkdError(f"{path}: not valid JSON ({e})") from None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_epoch: int) -> list[dict[str, Any]]:
  """Drops metric lines after `last_epoch` (written before a kill), returns those kept."""
  kept = [m for m in read_metrics(workdir) if m["epoch"] <= last_epoch]
  path = os.path.join(workdir, METRICS)
  if os.path.exists(path):
    with open(path + ".tmp", "w") as f:
      f.writelines(json.dumps(m, sort_keys=True) + "\n" for m in kept)
    os.replace(path + ".tmp", path)
  return kept


def append_metrics(workdir: str, record: dict[str, Any]) -> None:
  with open(os.path.join(workdir, METRICS), "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
