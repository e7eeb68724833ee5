"""Shared test helpers: small models trained here in seconds, for the evaluators' tests."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nkd.evaluation.predict import eval_apply_fn
from nkd.models.wrn import create_model, init_variables

COLOURS = np.array([[0.55, 0.45, 0.45], [0.45, 0.55, 0.45], [0.45, 0.45, 0.55]])


def colour_images(rng: np.random.Generator, n: int, num_classes: int = 3, noise: float = 0.08):
  """Constant-colour images (one colour per class, 3 classes) plus pixel noise; uint8 NHWC."""
  labels = np.arange(n) % num_classes
  images = COLOURS[labels % len(COLOURS)][:, None, None, :] + rng.normal(0, noise, (n, 32, 32, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class TinyModel:
  model: Any
  variables: Any
  test_images: np.ndarray  # uint8 NHWC
  test_labels: np.ndarray  # int32

  @property
  def apply_fn(self):
    return eval_apply_fn(self.model)

  @property
  def test_unit(self) -> np.ndarray:
    return self.test_images.astype(np.float32) / 255.0


@functools.lru_cache(maxsize=None)
def trained_tiny(steps: int = 40, input_noise_sigma: float = 0.0, num_test: int = 40,
                 seed: int = 0) -> TinyModel:
  """A WRN-10-1 trained for `steps` SGD steps (batch 32) on 3-class colour images, optionally
  with Gaussian input noise (Soft Randomization's student alone). Cached per process."""
  rng = np.random.default_rng(seed)
  train_x, train_y = colour_images(rng, 32 * steps)
  test_x, test_y = colour_images(rng, num_test)
  model = create_model("wrn-10-1", num_classes=3)
  variables = init_variables(model, jax.random.key(seed))
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state, x, y, key):
    x = x.astype(jnp.float32) / 255
    if input_noise_sigma:
      x = x + input_noise_sigma * jax.random.normal(key, x.shape)

    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    delta, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, delta), updates["batch_stats"], opt_state

  params, batch_stats = variables["params"], variables["batch_stats"]
  for i in range(steps):
    params, batch_stats, opt_state = step(params, batch_stats, opt_state,
                                          train_x[i * 32:(i + 1) * 32],
                                          train_y[i * 32:(i + 1) * 32],
                                          jax.random.key(1000 + i))
  return TinyModel(model, {"params": params, "batch_stats": batch_stats}, test_x, test_y)
