"""nkd's BatchNorm: the variables and results of flax's nn.BatchNorm, its written-out gradient
equal to autodiff of the same formula, and per-channel sums as precise as XLA's reduction."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd.models import batchnorm
from nkd.models.batchnorm import BatchNorm

SHAPE = (16, 8, 8, 5)


def _inputs():
  x = jax.random.normal(jax.random.key(0), SHAPE) * 3 + 1
  ref = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  variables = ref.init(jax.random.key(1), x, use_running_average=True)
  noise = lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape)  # noqa: E731
  return x, jax.tree.map(noise, variables)


def _apply(module, variables, x, train):
  if isinstance(module, BatchNorm):
    return module.apply(variables, x, train, mutable=["batch_stats"] if train else False)
  return module.apply(
      variables, x, use_running_average=not train, mutable=["batch_stats"] if train else False
  )


@pytest.mark.parametrize("train", [True, False])
def test_same_variables_outputs_statistics_and_gradients_as_flax(train):
  x, variables = _inputs()
  ours, ref = BatchNorm(momentum=0.9, epsilon=1e-5), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      ours.init(jax.random.key(1), x, False),
      ref.init(jax.random.key(1), x, use_running_average=True),
  )
  weights = jnp.arange(SHAPE[-1], dtype=jnp.float32)

  def loss(module, params, x):
    out = _apply(module, {"params": params, "batch_stats": variables["batch_stats"]}, x, train)
    y, updates = out if train else (out, None)
    return jnp.sum(jnp.sin(y) * weights), (y, updates)

  grad = lambda m: jax.jit(jax.grad(lambda p, x: loss(m, p, x), (0, 1), has_aux=True))  # noqa: E731
  g_ours, (y_ours, u_ours) = grad(ours)(variables["params"], x)
  g_ref, (y_ref, u_ref) = grad(ref)(variables["params"], x)
  if train:  # Another summation order: float32 rounding apart.
    chex.assert_trees_all_close((y_ours, u_ours), (y_ref, u_ref), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g_ours, g_ref, rtol=2e-5, atol=2e-4)
  else:  # Eval mode is flax's formula, operation for operation.
    chex.assert_trees_all_equal((y_ours, g_ours), (y_ref, g_ref))


def _reference_norm(x, scale, bias, epsilon):
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.mean((x - mean) ** 2, axis=(0, 1, 2))
  return (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias, mean, var


def test_written_out_gradient_equals_autodiff_of_the_formula():
  """Through the normalised output and through the batch statistics (the latter have zero
  cotangent in training, where only the loss is differentiated)."""
  x, _ = _inputs()
  scale = jnp.linspace(0.5, 1.5, SHAPE[-1])
  bias = jnp.linspace(-0.2, 0.2, SHAPE[-1])
  w_y = jax.random.normal(jax.random.key(3), SHAPE)
  w_stats = jax.random.normal(jax.random.key(4), (2, SHAPE[-1]))

  def loss(norm):
    def f(x, scale, bias):
      y, mean, var = norm(x, scale, bias, 1e-5)
      return jnp.sum(jnp.sin(y) * w_y) + jnp.sum(mean * w_stats[0]) + jnp.sum(var * w_stats[1])

    return jax.jit(jax.value_and_grad(f, (0, 1, 2)))(x, scale, bias)

  chex.assert_trees_all_close(
      loss(batchnorm._train_norm), loss(_reference_norm), rtol=2e-5, atol=2e-5
  )


def test_channel_sum_is_as_precise_as_xla_reduction():
  x = jax.random.normal(jax.random.key(5), (128, 16, 16, 8)) + 3.0
  exact = np.asarray(x, np.float64).sum(axis=(0, 1, 2))
  ours = np.asarray(jax.jit(batchnorm.channel_sum)(x), np.float64)
  xla = np.asarray(jax.jit(lambda x: jnp.sum(x, axis=(0, 1, 2)))(x), np.float64)
  assert np.max(np.abs(ours - exact) / exact) <= max(2 * np.max(np.abs(xla - exact) / exact), 1e-7)


def test_bfloat16_model_keeps_float32_statistics():
  x, variables = _inputs()
  y, updates = _apply(BatchNorm(dtype=jnp.bfloat16), variables, x.astype(jnp.bfloat16), train=True)
  assert y.dtype == jnp.bfloat16
  assert jax.tree.map(lambda a: a.dtype, updates["batch_stats"]) == {
      "mean": jnp.float32,
      "var": jnp.float32,
  }
