"""The per-example side file of CERTIFY / PREDICT: a tab-separated table in the reference's
column order (idx, label, predict, radius, correct), then ours."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def write_per_example(path, per_example: Sequence[dict]) -> None:
  """Writes one line per example (as certify_dataset / predict_dataset return them)."""
  if not per_example:
    raise ValueError("no examples to write")
  names = {"index": "idx", "prediction": "predict"}
  first = ["index", "label", "prediction", "radius", "correct"]
  columns = [c for c in first if c in per_example[0]]
  columns += [c for c in per_example[0] if c not in columns]

  def cell(value):
    if isinstance(value, (bool, np.bool_)):
      return str(int(value))
    if isinstance(value, float):
      return repr(value)
    return str(value)

  with open(path, "w") as f:
    f.write("\t".join(names.get(c, c) for c in columns) + "\n")
    for e in per_example:
      f.write("\t".join(cell(e[c]) for c in columns) + "\n")
