"""nkd's dropout: keep probability to 2^-17, a mask that follows its key, flax's switches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd.models import dropout


@pytest.mark.parametrize("shape", [(64, 8, 8, 16), (300, 7), (3, 5, 5, 3)])
def test_keep_fraction_matches_the_rate(shape):
  rate = 0.3
  mask = np.asarray(jax.jit(lambda k: dropout.keep_mask(k, shape, rate))(jax.random.key(0)))
  assert mask.shape == shape and mask.dtype == bool
  n = mask.size
  # Binomial(n, 0.7): within 5 standard deviations.
  assert abs(mask.mean() - 0.7) <= 5 * np.sqrt(0.21 / n)


def test_chunked_mask_is_uniform_over_rows_and_positions():
  """A mask larger than one chunk: every chunk and both halves of a row keep ~70%."""
  shape = (8, 1 << 19)  # 2^18 words a row: chunks of 2^20 words hold 4 rows
  mask = np.asarray(dropout.keep_mask(jax.random.key(1), shape, 0.3))
  assert dropout.CHUNK_WORDS // (shape[1] // 2) == 4
  for part in (mask[:4], mask[4:], mask[:, : shape[1] // 2], mask[:, shape[1] // 2 :]):
    assert abs(part.mean() - 0.7) <= 5 * np.sqrt(0.21 / part.size)
  # Chunks are drawn from different keys: no repeated rows.
  assert not (mask[0] == mask[4]).all()


def test_mask_follows_the_key_and_only_the_key():
  shape = (16, 4, 4, 8)
  a, b = (dropout.keep_mask(jax.random.key(s), shape, 0.5) for s in (0, 1))
  assert not (a == b).all()
  chex.assert_trees_all_equal(dropout.keep_mask(jax.random.key(0), shape, 0.5), a)
  chex.assert_trees_all_equal(
      jax.jit(dropout.keep_mask, static_argnums=(1, 2))(jax.random.key(0), shape, 0.5), a
  )


def test_module_scales_kept_values_and_respects_deterministic():
  x = jnp.ones((32, 4, 4, 8))
  module = dropout.Dropout(0.25)
  assert module.apply({}, x, deterministic=True) is x
  y = module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
  values = set(np.unique(np.asarray(y)).tolist())
  assert values == {0.0, float(np.float32(1.0) / np.float32(0.75))}
  assert dropout.Dropout(0.0).apply({}, x, deterministic=False) is x
  chex.assert_trees_all_equal(
      dropout.Dropout(1.0).apply({}, x, deterministic=False), jnp.zeros_like(x)
  )


def test_threshold_rounds_the_rate_to_16_bits():
  # keep probability 1 - rate is represented as k / 2^16: 0.7 -> 45875 / 65536.
  shape = (1, 1 << 17)
  mask = np.asarray(dropout.keep_mask(jax.random.key(4), shape, 1.0 - 1.0 / 65536))
  assert mask.sum() <= 20  # keep probability 2^-16: about 2 of 131,072
