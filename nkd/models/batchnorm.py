"""BatchNorm over (N, H, W) with PyTorch's defaults, whose statistics are matrix-vector products.

The layer computes what `flax.linen.BatchNorm` does (same variables, running averages of the
batch mean and biased variance, float32 statistics for a bfloat16 model), with two differences
of rounding: the variance is E[(x - mean)^2] (two passes) instead of E[x^2] - E[x]^2, and the
batch gradient is written out (`_train_norm`'s VJP: two sums per layer instead of the six that
autodiff of the forward pass produces). On CPU every per-channel sum is two matrix-vector
products, ones(N) @ x(N, HWC) then ones(HW) @ (HW, C): XLA:CPU runs a plain reduction over
(N, H, W) single-threaded in a window loop (TreeReductionRewriter), about 8x slower on a
WRN-16-2 layer (2-vCPU Zen 4), while Eigen's products are threaded, and the sums of 128 and then
1,024 terms keep the tree's precision. Elsewhere it is `jnp.sum`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_REDUCED = (0, 1, 2)  # N, H, W of NHWC


def _sum_by_products(x):
  """Per-channel sum of x (N, ..., C) in float32 as two matrix-vector products."""
  n, c = x.shape[0], x.shape[-1]
  rows = jnp.dot(jnp.ones((n,), x.dtype), x.reshape(n, -1), precision=lax.Precision.HIGHEST)
  rows = rows.reshape(-1, c)
  return jnp.dot(jnp.ones((rows.shape[0],), x.dtype), rows, precision=lax.Precision.HIGHEST)


def channel_sum(x):
  """Sum of x (N, H, W, C) over N, H and W: products on CPU, XLA's reduction elsewhere."""
  return lax.platform_dependent(
      x, cpu=_sum_by_products, default=lambda x: jnp.sum(x, axis=_REDUCED)
  )


def _count(x) -> int:
  return x.shape[0] * x.shape[1] * x.shape[2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _train_norm(x, scale, bias, epsilon: float):
  """(y, mean, var) of training mode for float32 x (N, H, W, C)."""
  return _train_norm_fwd(x, scale, bias, epsilon)[0]


def _train_norm_fwd(x, scale, bias, epsilon):
  count = _count(x)
  mean = channel_sum(x) / count
  centred = x - mean
  var = channel_sum(centred * centred) / count
  inv = lax.rsqrt(var + epsilon)
  y = centred * (inv * scale) + bias
  return (y, mean, var), (x, mean, inv, scale)


def _train_norm_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv, scale = residuals
  g_y, g_mean, g_var = cotangents
  count = _count(x)
  centred = x - mean
  sum_g = channel_sum(g_y)
  sum_g_centred = channel_sum(g_y * centred)
  g_scale = sum_g_centred * inv
  # d/dx of y through x, the batch mean and the batch variance; then the two statistics' own
  # outputs (their cotangents are zero when only the loss is differentiated).
  g_x = (scale * inv) * (g_y - (sum_g + centred * (inv * inv) * sum_g_centred) / count)
  g_x = g_x + (g_mean + 2.0 * g_var * centred) / count
  return g_x, g_scale, sum_g


_train_norm.defvjp(_train_norm_fwd, _train_norm_bwd)


class BatchNorm(nn.Module):
  """Drop-in for `nn.BatchNorm(use_running_average=not train, momentum, epsilon, dtype)` on NHWC
  input, with the same variables: params scale, bias; batch_stats mean, var."""

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
    scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if not train:
      y = (x - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
      return y.astype(self.dtype)
    y, mean, var = _train_norm(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype)
