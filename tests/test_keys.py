"""nkd.keys computes the run's keys and each epoch's order on the host (numpy threefry2x32):
they must be jax.random's, integer for integer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd import keys as keys_lib


def _jax_run_keys(seed):
  root = jax.random.key(seed)
  return {n: jax.random.fold_in(root, t) for n, t in keys_lib.RUN_KEY_TAGS.items()}


@pytest.mark.parametrize("seed", [0, 1, 7, 123456, 2**31 - 1])
def test_run_keys_are_jax_fold_ins_of_the_seed(seed):
  ours, theirs = keys_lib.run_keys(seed), _jax_run_keys(seed)
  assert ours.keys() == theirs.keys()
  for name in ours:
    assert ours[name].dtype == theirs[name].dtype and ours[name].shape == ()
    np.testing.assert_array_equal(
        jax.random.key_data(ours[name]), jax.random.key_data(theirs[name])
    )


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1625, 1626, 2048, 50_000])
@pytest.mark.parametrize("epoch", [0, 5])
def test_epoch_permutation_is_jax_random_permutation(n, epoch):
  data_key = keys_lib.run_keys(3)["data"]
  ours = keys_lib.epoch_permutation(data_key, epoch, n)
  theirs = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
  assert isinstance(ours, jax.Array) and ours.dtype == theirs.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
  assert sorted(np.asarray(ours).tolist()) == list(range(n))


def test_host_threefry_split_and_bits_are_jax_random_split_and_bits():
  for seed in (0, 9, 2**31 - 1):
    key = jax.random.key(seed)
    words = keys_lib._words(key)  # pylint: disable=protected-access
    split = jax.random.key_data(jax.random.split(key))
    assert keys_lib._split(words) == tuple(map(tuple, np.asarray(split).tolist()))  # pylint: disable=protected-access
    bits = jax.random.bits(key, (1000,), jnp.uint32)
    np.testing.assert_array_equal(keys_lib._bits(words, 1000), np.asarray(bits))  # pylint: disable=protected-access


def test_fold_in_and_split_are_jax_randoms_and_other_keys_go_to_jax():
  key = keys_lib.run_keys(5)["eval"]
  for data in (0, 1, 17, 2**32 - 1):
    np.testing.assert_array_equal(
        jax.random.key_data(keys_lib.fold_in(key, data)),
        jax.random.key_data(jax.random.fold_in(key, data)),
    )
  ours, theirs = keys_lib.split(key), jax.random.split(key)
  for a, b in zip(ours, theirs):
    assert a.dtype == b.dtype and a.shape == b.shape == ()
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  rbg = jax.random.key(5, impl="rbg")  # not threefry2x32: JAX computes it
  np.testing.assert_array_equal(
      jax.random.key_data(keys_lib.fold_in(rbg, 3)),
      jax.random.key_data(jax.random.fold_in(rbg, 3)),
  )
  assert keys_lib.split(rbg)[0].dtype == rbg.dtype


def test_fold_in_and_split_inside_a_trace_are_jaxs():
  key = keys_lib.run_keys(2)["eval"]
  traced = jax.jit(lambda k: jax.random.key_data(keys_lib.split(keys_lib.fold_in(k, 4))[1]))
  np.testing.assert_array_equal(
      traced(key), jax.random.key_data(jax.random.split(jax.random.fold_in(key, 4))[1])
  )
