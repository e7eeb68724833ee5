"""The models' random initialisers, and all of a model's random draws made at once.

`conv_kernel` (Kaiming normal, fan_out, as in the reference PyTorch WRN) and `dense_kernel`
(LeCun truncated normal, flax's `nn.Dense` default) are `nn.initializers.variance_scaling` with
one difference: inside `drawn_together`, their draws are made in one pass over all the model's
parameters instead of one per parameter, with the same bits.

Why: `model.init` compiles each parameter's draw (a threefry2x32 loop and an inverse error
function) into kernels of their own, 80-110 per model; on a 2-vCPU CPU that is 1.6-2.4 s of
compiling per model, on every run. One draw for all parameters of a distribution compiles the
same arithmetic once (BENCHMARKS.md).

How: `drawn_together(init)(key)` traces `init` twice. The first trace records each draw's key,
shape and scale (its initialisers return zeros, unused); one threefry2x32 over the concatenated
counters of all draws (each element keeps its own draw's key and counter, so its bits are those
of `jax.random.bits(key, shape)` with jax_threefry_partitionable) and one transform make every
value; the second trace hands them out in the same call order. The second trace's keys and the
first trace's zeros go unused, and XLA drops them.

The values are `variance_scaling`'s bit for bit (on the CPU: tests/test_models.py checks WRN-10-1
and WRN-16-2 against `model.init`, WRN-10-2 and 40-2 were checked once, BENCHMARKS.md), which
holds because each element goes through the same operations:
  normal: sqrt(2) * erf_inv(u) * sqrt(variance), u uniform in (-1, 1), which XLA's algebraic
    simplifier folds to erf_inv(u) * c with the constant c = f32(sqrt(2) * sqrt(variance));
    written here as that product with c computed the same way (float32, rounded once each);
  truncated_normal: clip(sqrt(2) * erf_inv(u), lower', upper') * (sqrt(variance) / 0.8796...),
    u uniform in (erf(-sqrt(2)), erf(sqrt(2))).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The primitive behind jax.random.bits: threefry2x32 on explicit keys and counters.
from jax.extend.random import threefry2x32_p

# variance_scaling's constant: the standard deviation of a standard normal truncated to (-2, 2).
_TRUNCATED_STDDEV = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class _Draw:
  distribution: str  # "normal" or "truncated_normal"
  key: jax.Array
  shape: tuple[int, ...]
  variance: np.float32  # variance_scaling's: scale / fan, in float32


# Inside drawn_together: a list while recording the draws, an iterator of their values while
# handing them out; None elsewhere (the initialisers draw one by one, as variance_scaling).
_draws: contextvars.ContextVar[list[_Draw] | Iterator[jax.Array] | None] = contextvars.ContextVar(
    "nkd_initializer_draws", default=None
)


def _initializer(scale: float, mode: str, distribution: str) -> Callable[..., jax.Array]:
  one_by_one = nn.initializers.variance_scaling(scale, mode, distribution)

  def init(key, shape, dtype=jnp.float32):
    draws = _draws.get()
    if draws is None or jnp.dtype(dtype) != jnp.float32:
      return one_by_one(key, shape, dtype)
    if isinstance(draws, list):
      fan_in, fan_out = _fans(shape)
      fan = {"fan_in": fan_in, "fan_out": fan_out}[mode]
      draws.append(_Draw(distribution, key, tuple(shape), np.float32(scale / fan)))
      return jnp.zeros(shape, dtype)
    return next(draws)

  return init


def _fans(shape) -> tuple[float, float]:
  """variance_scaling's fans for a kernel (in axis -2, out axis -1, the rest receptive field)."""
  receptive = math.prod(shape[:-2])
  return float(shape[-2] * receptive), float(shape[-1] * receptive)


conv_kernel = _initializer(2.0, "fan_out", "normal")
dense_kernel = _initializer(1.0, "fan_in", "truncated_normal")


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return data[0], data[1]


def _uniform(bits: jax.Array, minval, maxval) -> jax.Array:
  """jax.random.uniform's transform of 32 random bits (float32)."""
  minval = lax.broadcast_to_rank(lax.convert_element_type(minval, jnp.float32), 1)
  maxval = lax.broadcast_to_rank(lax.convert_element_type(maxval, jnp.float32), 1)
  mantissa = lax.shift_right_logical(bits, jnp.array(32 - 23, jnp.uint32))
  one = jnp.asarray(np.array(1.0, np.float32).view(np.uint32), dtype=jnp.uint32)
  floats = lax.bitcast_convert_type(lax.bitwise_or(mantissa, one), jnp.float32)
  floats = floats - jnp.array(1.0, jnp.float32)
  return lax.max(minval, floats * (maxval - minval) + minval)


def _values(draws: list[_Draw], distribution: str) -> list[jax.Array]:
  """All draws of one distribution from one threefry2x32 and one transform."""
  sizes = [math.prod(d.shape) for d in draws]
  words = [_key_words(d.key) for d in draws]
  k1 = jnp.concatenate([jnp.broadcast_to(w[0], (n,)) for w, n in zip(words, sizes)])
  k2 = jnp.concatenate([jnp.broadcast_to(w[1], (n,)) for w, n in zip(words, sizes)])
  counter = jnp.concatenate([lax.iota(jnp.uint32, n) for n in sizes])  # each draw's own
  bits1, bits2 = threefry2x32_p.bind(k1, k2, jnp.zeros_like(counter), counter)
  bits = bits1 ^ bits2
  sqrt2 = np.array(np.sqrt(2), np.float32)
  if distribution == "normal":
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
    u = _uniform(bits, lo, np.float32(1.0))
    scales = [sqrt2 * np.sqrt(d.variance) for d in draws]  # float32, as XLA folds them
    values = lax.erf_inv(u)
  else:
    lower, upper = jnp.float32(-2.0), jnp.float32(2.0)
    u = _uniform(bits, lax.erf(lower / sqrt2), lax.erf(upper / sqrt2))
    values = jnp.clip(
        sqrt2 * lax.erf_inv(u),
        lax.nextafter(lower, jnp.float32(np.inf)),
        lax.nextafter(upper, jnp.float32(-np.inf)),
    )
    scales = [np.sqrt(d.variance) / np.float32(_TRUNCATED_STDDEV) for d in draws]
  scale = jnp.concatenate([jnp.full((n,), s, jnp.float32) for s, n in zip(scales, sizes)])
  values = values * scale
  out, start = [], 0
  for d, n in zip(draws, sizes):
    out.append(values[start : start + n].reshape(d.shape))
    start += n
  return out


@contextlib.contextmanager
def _drawing(state):
  token = _draws.set(state)
  try:
    yield
  finally:
    _draws.reset(token)


def drawn_together(init: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
  """`init(key)` (a model's `init`, to be traced under jit) with the random draws of
  `conv_kernel` and `dense_kernel` made together; the same values as `init(key)`."""

  def together(key):
    recorded: list[_Draw] = []
    with _drawing(recorded):
      init(key)
    values: list[jax.Array | None] = [None] * len(recorded)
    for distribution in ("normal", "truncated_normal"):
      index = [i for i, d in enumerate(recorded) if d.distribution == distribution]
      if index:
        for i, value in zip(index, _values([recorded[i] for i in index], distribution)):
          values[i] = value
    with _drawing(iter(values)):
      return init(key)

  return together
