"""The one prediction path: eval-mode logits of a model, with the variables as arguments.

Every evaluator takes `apply_fn(variables, images) -> logits`: `images` are NHWC float32 in
[0, 1] (the model normalises inside), `variables` a traced pytree ({'params', 'batch_stats'}).
`apply_fn` is a static argument of the jitted cores, so it must be hashable and stable:
`eval_apply_fn(model)` is memoised on the (hashable) Flax module, so two runs of the same
architecture get the same function object and share every compilation, in one process and,
through the persistent compilation cache, across processes (big_vision's `get_eval_fn`).

Models that are random at test time (Gaussian input noise, dropout kept on) are described by
`random_apply_fn(variables, images, key) -> logits` (see `noisy_apply_fn`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nkd.data.augment import to_unit_float
from nkd.evaluation import batching

ApplyFn = Callable[[Any, jax.Array], jax.Array]
RandomApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@functools.lru_cache(maxsize=None)
def eval_apply_fn(model) -> ApplyFn:
  """`apply(variables, images) -> float32 logits` of `model` in eval mode (BatchNorm running
  statistics, dropout off). One function object per architecture."""

  def apply(variables, images):
    return model.apply(variables, images, train=False, deterministic=True).astype(jnp.float32)

  return apply


@functools.lru_cache(maxsize=None)
def noisy_apply_fn(model, input_noise_sigma: float = 0.0, dropout: bool = False) -> RandomApplyFn:
  """`apply(variables, images, key) -> logits` of a model that is random at test time:
  Gaussian noise N(0, sigma^2) on the [0, 1] input (not clipped, as in training) and/or
  dropout kept on (BatchNorm stays in eval mode)."""

  def apply(variables, images, key):
    noise_key, dropout_key = jax.random.split(key)
    if input_noise_sigma:
      images = images + input_noise_sigma * jax.random.normal(noise_key, images.shape, images.dtype)
    kwargs = {"rngs": {"dropout": dropout_key}} if dropout else {}
    return model.apply(variables, images, train=False, deterministic=not dropout, **kwargs).astype(
        jnp.float32
    )

  return apply


@functools.partial(jax.jit, static_argnums=0)
def _logits_core(apply_fn: ApplyFn, variables, images: jax.Array) -> jax.Array:
  return apply_fn(variables, to_unit_float(images)).astype(jnp.float32)


def logits_core_cache_size() -> int:
  """Compiled variants of the logits core (tests: a second evaluation compiles nothing)."""
  return _logits_core._cache_size()  # pylint: disable=protected-access


def compute_logits(
    apply_fn: ApplyFn, variables, images: np.ndarray, batch_size: int = 1000
) -> np.ndarray:
  """Logits (N, C) float32 for uint8 or [0, 1] float NHWC images, in batches; the last batch
  is padded so one compiled shape serves the whole split."""
  n = len(images)
  if n == 0:
    raise ValueError("compute_logits: no images given")
  size = batching.effective_batch_size(n, batch_size)
  out = []
  for _, start, stop in batching.padded_batches(n, size):
    (batch,) = batching.split_over_model_devices(
        variables, batching.pad_batch(np.asarray(images[start:stop]), size)
    )
    with batching.on_model_devices(variables):
      out.append(np.asarray(_logits_core(apply_fn, variables, batch))[: stop - start])
  return np.concatenate(out, axis=0)


def count_correct(
    apply_fn: ApplyFn, variables, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000
) -> int:
  """Number of correctly classified images."""
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  logits = compute_logits(apply_fn, variables, images, batch_size)
  return int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent."""
  return float(100.0 * np.mean(np.argmax(logits, -1) == np.asarray(labels)))
