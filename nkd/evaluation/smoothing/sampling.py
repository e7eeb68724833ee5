"""The counting core: how often the base classifier predicts each class on noisy copies.

Draw j of test image i in noise stream s is `normal(draw_key(key, i, s, j))`, so counts do not
depend on the batch size or on which other images share a call. One jitted call adds the noise,
runs the model and sums one-hot counts on the device; only counts come back.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from nkd.config.evaluation import SMOOTHING_BATCH_SIZE as BATCH_SIZE, check_smoothing, is_int
from nkd.data.augment import to_unit_float
from nkd.evaluation.predict import ApplyFn, eval_apply_fn

# Noise streams: independent draws for CERTIFY's selection, its estimation and for PREDICT.
STREAM_SELECT, STREAM_ESTIMATE, STREAM_PREDICT = 0, 1, 2

# Device calls dispatched ahead of the host reading their counts back.
_MAX_IN_FLIGHT = 32


def draw_key(key: jax.Array, image_index, stream, draw) -> jax.Array:
  """The key of noise draw `draw` of test image `image_index` in noise stream `stream`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, image_index), stream), draw)


def _cast_floats(tree, dtype):
  return jax.tree.map(
      lambda v: v.astype(dtype) if jnp.issubdtype(jnp.result_type(v), jnp.floating) else v, tree
  )


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size", "num_classes", "dtype"))
def _counts_core(
    apply_fn,
    variables,
    key,
    images,
    image_indices,
    stream,
    first_row,
    num,
    num_rows,
    sigma,
    *,
    batch_size,
    num_classes,
    dtype,
):
  """Counts (K, num_classes) int32 of one call: rows first_row .. first_row + batch_size - 1 of
  the draws of images[0], images[1], ... laid end to end (`num` each); rows >= num_rows masked."""
  k = images.shape[0]
  row = first_row + jnp.arange(batch_size, dtype=jnp.int32)
  slot = jnp.minimum(row // num, k - 1)
  draw = row % num
  valid = jnp.arange(batch_size, dtype=jnp.int32) < num_rows
  keys = jax.vmap(draw_key, in_axes=(None, 0, None, 0))(key, image_indices[slot], stream, draw)
  noise = jax.vmap(lambda kk: jax.random.normal(kk, images.shape[1:], jnp.float32))(keys)
  noisy = images[slot] + sigma * noise
  if dtype != "float32":
    noisy = noisy.astype(dtype)
    variables = _cast_floats(variables, dtype)
  predictions = jnp.argmax(apply_fn(variables, noisy), axis=-1)
  hits = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32) * valid[:, None]
  return jax.ops.segment_sum(hits, slot, num_segments=k)


def counts_core_cache_size() -> int:
  """Compiled variants of the sampling core (tests: one compilation per shape)."""
  return _counts_core._cache_size()  # pylint: disable=protected-access


def infer_num_classes(apply_fn: ApplyFn, variables, image_shape: Sequence[int]) -> int:
  """The logits' last dimension, from shapes alone (nothing compiles)."""
  spec = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  return int(jax.eval_shape(apply_fn, variables, spec).shape[-1])


def _as_key(key) -> jax.Array:
  return jax.random.key(key) if is_int(key) else key


def _images_per_call(num: int, batch_size: int) -> int:
  """The most images a run of batch_size consecutive rows can touch (n draws per image)."""
  return (num + batch_size - 2) // num + 1


def count_draws(
    apply_fn: ApplyFn,
    variables,
    key,
    images,
    image_indices,
    *,
    sigma: float,
    num: int,
    batch_size: int = BATCH_SIZE,
    num_classes: int | None = None,
    stream: int = STREAM_SELECT,
    dtype: str = "float32",
    log_name: str = "",
) -> np.ndarray:
  """Counts (len(images), num_classes) int64 of the base classifier's predictions on `num`
  noisy copies of each image (uint8 or [0, 1] float NHWC); `image_indices` are the images'
  indices in the test set, which with `key` and `stream` fix every noise draw (`draw_key`).

  The draws of all images are laid end to end and cut into calls of `batch_size` rows (several
  images share a call when num < batch_size; the last call is padded and masked), so the core
  compiles once per (apply_fn, batch size, images per call, dtype)."""
  check_smoothing(sigma=sigma, n=num, batch_size=batch_size, dtype=dtype)
  images = to_unit_float(np.asarray(images))
  image_indices = np.asarray(image_indices, np.int32).reshape(-1)
  if images.ndim != 4 or len(images) == 0 or len(images) != len(image_indices):
    raise ValueError(
        f"need NHWC images (N > 0) and N image indices, got {images.shape} and "
        f"{image_indices.shape}"
    )
  if num_classes is None:
    num_classes = infer_num_classes(apply_fn, variables, images.shape[1:])
  key = _as_key(key)
  n_images = len(images)
  total = n_images * int(num)
  size = max(1, min(int(batch_size), total))
  k = _images_per_call(int(num), size)
  constants = jax.device_put((np.int32(stream), np.int32(num), np.float32(sigma)))
  counts = np.zeros((n_images, num_classes), np.int64)
  pending: collections.deque = collections.deque()

  def collect():
    first, out = pending.popleft()
    used = min(k, n_images - first)
    counts[first : first + used] += np.asarray(out)[:used]

  start_time, next_log, placed = time.time(), 0.1, (-1, None, None)
  for start in range(0, total, size):
    first = start // num
    if first != placed[0]:
      positions = np.minimum(np.arange(first, first + k), n_images - 1)
      placed = (first, *jax.device_put((images[positions], image_indices[positions])))
    out = _counts_core(
        apply_fn,
        variables,
        key,
        placed[1],
        placed[2],
        constants[0],
        np.int32(start - first * num),
        constants[1],
        np.int32(min(size, total - start)),
        constants[2],
        batch_size=size,
        num_classes=int(num_classes),
        dtype=dtype,
    )
    pending.append((first, out))
    if len(pending) > _MAX_IN_FLIGHT:
      collect()
    if log_name and start + size >= next_log * total:
      elapsed = time.time() - start_time
      logging.info(
          "%s: %d / %d noisy forward passes (%.0f / s)",
          log_name,
          min(start + size, total),
          total,
          min(start + size, total) / max(elapsed, 1e-9),
      )
      next_log += 0.1
  while pending:
    collect()
  if np.any(counts.sum(axis=1) != num):
    raise ValueError(f"num_classes={num_classes} is smaller than the model's number of classes")
  return counts


def sample_counts(
    apply_fn: ApplyFn,
    variables,
    key,
    image,
    *,
    sigma: float,
    num: int,
    batch_size: int = BATCH_SIZE,
    num_classes: int | None = None,
    image_index: int = 0,
    stream: int = STREAM_SELECT,
    dtype: str = "float32",
) -> np.ndarray:
  """Counts (num_classes,) int64 of f(image + N(0, sigma^2)) over `num` draws (the reference's
  `_sample_noise`); draw j uses `draw_key(key, image_index, stream, j)`."""
  return count_draws(
      apply_fn,
      variables,
      key,
      np.asarray(image)[None],
      [image_index],
      sigma=sigma,
      num=num,
      batch_size=batch_size,
      num_classes=num_classes,
      stream=stream,
      dtype=dtype,
  )[0]


@functools.lru_cache(maxsize=None)
def smoothing_apply_fn(model, dtype: str = "float32") -> ApplyFn:
  """`eval_apply_fn` of `model` computing in `dtype` (a clone with the module's compute dtype
  set; the parameters keep their dtype). Memoised, so compilations are shared. Our WRN fixes
  its layers' compute dtype, so bfloat16 sampling needs this clone, not only a cast input."""
  check_smoothing(dtype=dtype)
  if not hasattr(model, "dtype") or jnp.dtype(model.dtype) == jnp.dtype(dtype):
    return eval_apply_fn(model)
  return eval_apply_fn(model.clone(dtype=jnp.dtype(dtype)))
