"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis, 2016) in Flax linen.

Pre-activation basic blocks, a 1x1 convolution shortcut where width or stride changes, dropout
between the two 3x3 convolutions of each block. This matches the WRN used by the paper's lab and
by RepDistiller, so WRN-40-2 has 2,243,546 parameters and WRN-16-2 691,674 for 10 classes.

`train` (BatchNorm: batch statistics and update of the running averages) and `deterministic`
(dropout off) are separate arguments: the Fickle Teacher keeps dropout on with BatchNorm frozen.
Inputs are images in [0, 1]; the CIFAR-10 normalisation happens inside the model, so input noise
and attack epsilons are in pixel units.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nkd.config import parse_model_name
from nkd.models import initializers
from nkd.models.batchnorm import BatchNorm
from nkd.models.conv import conv2d
from nkd.models.dropout import Dropout

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class _BatchNorm(nn.Module):
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    return BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="BatchNorm_0")(x, train)


class Conv(nn.Module):
  """Bias-free k x k convolution, 'same' padding k // 2 (as nn.Conv with those settings: the
  same parameter, initialiser and forward computation), through `conv2d`, whose input gradient
  XLA:CPU runs on its fast path."""

  features: int
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param(
        "kernel", initializers.conv_kernel, (k, k, x.shape[-1], self.features), jnp.float32
    )
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return conv2d(x, kernel, self.stride, ((k // 2, k // 2), (k // 2, k // 2)))


class BasicBlock(nn.Module):
  """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 plus shortcut."""

  features: int
  stride: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, deterministic: bool):
    conv = lambda f, k, s, name: Conv(f, k, s, self.dtype, name=name)  # noqa: E731
    equal_in_out = x.shape[-1] == self.features and self.stride == 1
    preact = nn.relu(_BatchNorm(self.dtype, name="bn1")(x, train))
    shortcut = x if equal_in_out else conv(self.features, 1, self.stride, "shortcut")(preact)
    y = conv(self.features, 3, self.stride, "conv1")(preact)
    y = nn.relu(_BatchNorm(self.dtype, name="bn2")(y, train))
    if self.dropout_rate > 0:
      y = Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = conv(self.features, 3, 1, "conv2")(y)
    return y + shortcut


class WideResNet(nn.Module):
  """WRN-depth-widen for 32x32 images in [0, 1]; returns logits (float32)."""

  depth: int
  widen_factor: int
  num_classes: int = 10
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, deterministic: bool = True):
    if (self.depth - 4) % 6 or self.depth < 10:
      raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {self.depth}")
    n = (self.depth - 4) // 6
    mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(CIFAR10_STD, jnp.float32)
    x = ((x.astype(jnp.float32) - mean) / std).astype(self.dtype)
    x = Conv(16, 3, 1, self.dtype, name="conv_init")(x)
    for group, (width, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
      for i in range(n):
        x = BasicBlock(
            width * self.widen_factor,
            stride if i == 0 else 1,
            self.dropout_rate,
            self.dtype,
            name=f"group{group}_block{i}",
        )(x, train=train, deterministic=deterministic)
    x = nn.relu(_BatchNorm(self.dtype, name="bn_final")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=initializers.dense_kernel,
        bias_init=nn.initializers.zeros,
        dtype=self.dtype,
        name="fc",
    )(x)
    return x.astype(jnp.float32)


# Programs are built once per process for each distinct description (model, optimiser, step):
# a second run of the same shape in one process (an in-process sweep, nkd.api in a notebook,
# the tests) reuses the compiled program instead of tracing, lowering and loading it again.
# The descriptions are immutable and compared by value; 64 of each are kept.
MEMO_SIZE = 64


@functools.lru_cache(maxsize=MEMO_SIZE)
def create_model(
    name: str, *, num_classes: int = 10, dropout_rate: float = 0.0, dtype: str = "float32"
) -> WideResNet:
  """The (immutable) model of an architecture name: one object per description, so the
  programs built on it (`model.apply` is part of a train state's structure) are shared."""
  depth, width = parse_model_name(name)
  return WideResNet(depth, width, num_classes, dropout_rate, jnp.dtype(dtype))


@functools.lru_cache(maxsize=MEMO_SIZE)
def _init_program(model: nn.Module, image_size: int):
  shape = (1, image_size, image_size, 3)  # zeros made inside the program: no eager op to compile
  init = lambda k: model.init(k, jnp.zeros(shape, jnp.float32), train=False)  # noqa: E731
  return jax.jit(initializers.drawn_together(init))


def init_variables(model: nn.Module, key: jax.Array, image_size: int = 32):
  """Initial {'params', 'batch_stats'} from an explicit key: `model.init`'s values, its random
  draws made in one pass (`initializers.drawn_together`)."""
  return _init_program(model, image_size)(key)


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
