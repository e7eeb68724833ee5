"""Batched evaluation of a host array with one compiled forward core per batch shape.

The last batch is padded to the common batch size and masked, so a whole split (and every
corruption, severity or epsilon evaluated after it) reuses one compilation. `TRACE_COUNTS`
counts how often each jitted core is traced; tests read it to catch recompiles.
"""

from __future__ import annotations

import collections
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[jax.Array], jax.Array]

# name of a jitted core -> number of times its Python body ran (once per compilation).
TRACE_COUNTS: collections.Counter = collections.Counter()


def count_trace(name: str) -> None:
  """Call inside a jitted function's body: runs only while tracing."""
  TRACE_COUNTS[name] += 1


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def check_batch_size(batch_size: int, option: str = "batch_size") -> None:
  if int(batch_size) < 1:
    raise ValueError(f"{option} must be >= 1, got {batch_size}")


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


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
  """Pads axis 0 of `array` to `size` rows by repeating the first row (valid pixels/labels)."""
  missing = size - len(array)
  if missing <= 0:
    return array
  filler = np.repeat(np.asarray(array[:1]), missing, axis=0)
  return np.concatenate([np.asarray(array), filler], axis=0)


def batch_mask(num_valid: int, size: int) -> np.ndarray:
  return np.arange(size) < num_valid


@functools.partial(jax.jit, static_argnums=0)
def _logits_core(apply_fn: ApplyFn, images: jax.Array) -> jax.Array:
  count_trace("logits")
  return apply_fn(to_unit_float(images)).astype(jnp.float32)


def compute_logits(apply_fn: ApplyFn, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Logits (N, C) float32 for uint8 or [0, 1] float NHWC images, in batches."""
  n = len(images)
  if n == 0:
    raise ValueError("compute_logits: no images given")
  size = effective_batch_size(n, batch_size)
  out = []
  for _, start, stop in padded_batches(n, size):
    batch = pad_batch(np.asarray(images[start:stop]), size)
    out.append(np.asarray(_logits_core(apply_fn, batch))[:stop - start])
  return np.concatenate(out, axis=0)


def count_correct(apply_fn: ApplyFn, images: np.ndarray, labels: np.ndarray,
                  batch_size: int = 1000) -> int:
  """Number of correctly classified images (the logits core; argmax on host)."""
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  logits = compute_logits(apply_fn, images, batch_size)
  return int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))
