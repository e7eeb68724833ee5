"""Padded batches of a host array: one batch shape per split.

The last batch is padded to the common batch size and its padding dropped from the results, so
a whole split (and every corruption, severity or epsilon evaluated after it) reuses one
compilation of an evaluator's jitted core.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nkd.errors import ConfigError
from nkd.models import conv


def check_batch_size(batch_size: int, option: str = "batch_size") -> None:
  if int(batch_size) < 1:
    raise ConfigError(f"--{option} must be >= 1, got {batch_size}")


def padded_batches(num_examples: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
  """Yields (batch_index, start, stop) covering range(num_examples).

  Every batch is padded to `effective_batch_size(num_examples, batch_size)` by the caller.
  """
  size = effective_batch_size(num_examples, batch_size)
  for index, start in enumerate(range(0, num_examples, size)):
    yield index, start, min(start + size, num_examples)


def effective_batch_size(num_examples: int, batch_size: int) -> int:
  """The one batch shape used for a split: never larger than the split itself."""
  check_batch_size(batch_size)
  return max(1, min(int(batch_size), int(num_examples)))


def bucket_size(count: int, batch_size: int) -> int:
  """The padded shape for `count` (<= batch_size) remaining rows: the next power of two, at most
  batch_size. A loop over shrinking sets of points (AutoAttack's stages) then costs in
  proportion to the points left, with at most log2(batch_size) + 2 compiled shapes."""
  check_batch_size(batch_size)
  return min(int(batch_size), 1 << max(0, int(count) - 1).bit_length())


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
  """Pads axis 0 of `array` to `size` rows by repeating the first row (valid pixels/labels)."""
  missing = size - len(array)
  if missing <= 0:
    return array
  filler = np.repeat(np.asarray(array[:1]), missing, axis=0)
  return np.concatenate([np.asarray(array), filler], axis=0)


def model_mesh(variables) -> Mesh | None:
  """The mesh the model's variables are replicated on when it has several devices of one process
  on a 'data' axis (what split_over_model_devices splits batches over), else None."""
  leaves = jax.tree.leaves(variables)
  sharding = getattr(leaves[0], "sharding", None) if leaves else None
  if not isinstance(sharding, NamedSharding) or not sharding.is_fully_addressable:
    return None
  return sharding.mesh if dict(sharding.mesh.shape).get("data", 1) > 1 else None


def on_model_devices(variables):
  """Context for calling a jitted evaluator on batches from split_over_model_devices: nkd's CPU
  convolution kernels inside then run on each device's rows (`conv.batch_sharded`)."""
  return conv.batch_sharded(model_mesh(variables))


def split_over_model_devices(variables, *batches: Any) -> tuple[Any, ...]:
  """`batches` (arrays with the same number of rows) split by rows over the devices the
  model's variables are replicated on, the run's mesh: a jitted evaluator then runs
  data-parallel there (XLA partitions it by the batch; the per-example random streams do not
  depend on the split), instead of every device computing the whole batch. Unchanged where it
  cannot be: one device, variables not on a mesh with a 'data' axis, a mesh over several
  processes (each would hold only its own rows) or rows that do not divide evenly."""
  mesh = model_mesh(variables)
  rows = {len(b) for b in batches}
  if mesh is None or len(rows) != 1 or rows.pop() % mesh.shape["data"]:
    return batches
  split = NamedSharding(mesh, P("data"))
  return tuple(jax.device_put(b, split) for b in batches)
