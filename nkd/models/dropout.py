"""Inverted dropout whose mask costs half the random words of `jax.random.bernoulli`.

Each 32-bit word of threefry gives two 16-bit uniforms; an element is kept when its uniform is
below round((1 - rate) 2^16), so the keep probability is exact to 2^-17 (0.7 -> 0.699997).
The words are drawn over the leading (batch) axis in chunks of at most 2^20 words, the i-th from
`fold_in(key, i)`: on XLA:CPU the threefry of one 4M-element array ran 3x slower per element
than that of arrays a quarter its size (its intermediates leave the cache). The chunk size is
part of the random stream's definition. Measured on a 2-vCPU Zen 4: a (128, 32, 32, 32) mask
and multiply 12 ms against flax's `nn.Dropout` 39 ms.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

CHUNK_WORDS = 1 << 20


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
  """Boolean mask of `shape` (leading axis: the batch), each element True with probability
  1 - rate (to 2^-17)."""
  threshold = round((1.0 - rate) * 65536)
  rows, per_row = shape[0], math.prod(shape[1:])
  words_per_row = -(-per_row // 2)
  chunk_rows = max(1, min(rows, CHUNK_WORDS // max(words_per_row, 1)))
  chunks = []
  for i, start in enumerate(range(0, rows, chunk_rows)):
    n = min(chunk_rows, rows - start)
    words = jax.random.bits(jax.random.fold_in(key, i), (n, words_per_row), jnp.uint32)
    uniforms = jnp.concatenate([words & 0xFFFF, words >> 16], axis=1)[:, :per_row]
    chunks.append(uniforms < threshold)
  mask = chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks)
  return mask.reshape(shape)


class Dropout(nn.Module):
  """`nn.Dropout(rate)` with `keep_mask`'s random stream (rng collection 'dropout')."""

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:
      return jnp.zeros_like(x)
    keep = keep_mask(self.make_rng("dropout"), x.shape, self.rate)
    return jax.lax.select(keep, x / (1.0 - self.rate), jnp.zeros_like(x))
