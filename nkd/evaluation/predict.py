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

ApplyFn = Callable[[Any, jax.Array], jax.Array]
RandomApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


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
      images = images + input_noise_sigma * jax.random.normal(noise_key, images.shape,
                                                              images.dtype)
    kwargs = {"rngs": {"dropout": dropout_key}} if dropout else {}
    return model.apply(variables, images, train=False, deterministic=not dropout,
                       **kwargs).astype(jnp.float32)

  return apply
