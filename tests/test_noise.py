"""Tests of nkd.noise: identity at level 0, determinism, jit agreement, statistics, checks."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd import keys, noise

KEY = jax.random.PRNGKey(0)
OTHER_KEY = jax.random.PRNGKey(1)


def _logits(n=256, c=10, seed=3):
  """Logits bounded away from 0, so z'/z - 1 recovers d accurately."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  magnitude = jax.random.uniform(k1, (n, c), minval=1.0, maxval=3.0)
  sign = jnp.where(jax.random.bernoulli(k2, 0.5, (n, c)), 1.0, -1.0)
  return magnitude * sign


def _images(n=8, seed=4):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, 32, 32, 3))


def _labels(n=1000, c=10, seed=5, dtype=jnp.int32):
  return jax.random.randint(jax.random.PRNGKey(seed), (n,), 0, c).astype(dtype)


def _probs(n=512, c=10, seed=6, scale=1.0):
  """Softmax rows with distinct values (no ties) almost surely."""
  z = scale * jax.random.normal(jax.random.PRNGKey(seed), (n, c))
  return jax.nn.softmax(z, axis=-1)


def _ref_swap_row(row, eligible, threshold, mode):
  """Plain numpy statement of the documented swap rule, for one row."""
  row = np.asarray(row)
  order = np.argsort(-row, kind="stable")
  vals = row[order].copy()
  if eligible:
    for k in range(1 if mode == "top2" else len(row) - 1):
      if vals[k] - vals[k + 1] < threshold:
        vals[k], vals[k + 1] = vals[k + 1], vals[k]
  out = np.empty_like(row)
  out[order] = vals
  return out


# (function, input, kwargs with a nonzero level, the same kwargs at level 0)
CASES = {
    "signal_noise": (noise.signal_noise, _logits, dict(sigma=0.3), dict(sigma=0.0)),
    "signal_noise_per_sample": (
        noise.signal_noise,
        _logits,
        dict(sigma=0.3, per_sample=True),
        dict(sigma=0, per_sample=True),
    ),
    "gaussian_input_noise": (noise.gaussian_input_noise, _images, dict(sigma=0.1), dict(sigma=0)),
    "gaussian_input_noise_clip": (
        noise.gaussian_input_noise,
        _images,
        dict(sigma=0.1, clip=True),
        dict(sigma=0.0, clip=True),
    ),
    "corrupt_labels": (
        noise.corrupt_labels,
        _labels,
        dict(p=0.3, num_classes=10),
        dict(p=0, num_classes=10),
    ),
    "swap_top2": (
        noise.swap_probs,
        functools.partial(_probs, scale=0.3),
        dict(p=0.5, threshold=0.05, mode="top2"),
        dict(p=0, threshold=0.05, mode="top2"),
    ),
    "swap_all": (
        noise.swap_probs,
        functools.partial(_probs, scale=0.3),
        dict(p=0.5, threshold=0.05, mode="all"),
        dict(p=0.0, threshold=0.05, mode="all"),
    ),
}


# ----------------------------------------------------------------------------
# Properties shared by every source.


@pytest.mark.parametrize("name", sorted(CASES))
def test_level_zero_is_identity(name):
  fn, make, _, zero_kwargs = CASES[name]
  x = make()
  y = fn(KEY, x, **zero_kwargs)
  assert y is x
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  # Also for a numpy input, under jit.
  x_np = np.asarray(make())
  assert fn(KEY, x_np, **zero_kwargs) is x_np
  y_jit = jax.jit(functools.partial(fn, **zero_kwargs))(KEY, x_np)
  assert np.asarray(y_jit).tobytes() == x_np.tobytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_key_same_output_other_key_differs(name):
  fn, make, kwargs, _ = CASES[name]
  x = make()
  a = fn(KEY, x, **kwargs)
  b = fn(KEY, x, **kwargs)
  c = fn(OTHER_KEY, x, **kwargs)
  chex.assert_shape(a, x.shape)
  chex.assert_type(a, x.dtype)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  assert not np.array_equal(np.asarray(a), np.asarray(x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_new_style_typed_keys(name):
  fn, make, kwargs, _ = CASES[name]
  x = make()
  typed = fn(jax.random.key(0), x, **kwargs)
  raw = fn(jax.random.PRNGKey(0), x, **kwargs)
  np.testing.assert_array_equal(typed, raw)


class JitAgreementTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_variants_agree_with_eager(self):
    for name, (fn, make, kwargs, _) in sorted(CASES.items()):
      x = make()
      expected = fn(KEY, x, **kwargs)
      got = self.variant(functools.partial(fn, **kwargs))(KEY, x)
      chex.assert_shape(got, x.shape)
      chex.assert_type(got, x.dtype)
      # Integer labels and permuted probabilities must match exactly; float noise to rounding.
      if name.startswith(("corrupt", "swap")):
        np.testing.assert_array_equal(got, expected, err_msg=name)
      else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)

  def test_one_trace_per_static_setting(self):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, probs):
      return noise.swap_probs(key, probs, p=0.5, threshold=0.1, mode="all")

    chex.clear_trace_counter()
    probs = _probs()
    for i in range(3):
      step(jax.random.PRNGKey(i), probs)


# ----------------------------------------------------------------------------
# Signal-dependent noise.


def test_signal_noise_per_element_statistics():
  sigma = 0.3
  z = _logits(n=4096)
  out = noise.signal_noise(KEY, z, sigma=sigma)
  d = np.asarray(out / z - 1.0, np.float64)
  assert abs(d.mean()) < 0.01
  np.testing.assert_allclose(d.var(), sigma**2, rtol=0.05)
  # Independent per element: the logits of a row get different factors.
  assert np.all(d.std(axis=1) > 0)


def test_signal_noise_per_sample_shares_d_within_row():
  sigma = 0.2
  z = _logits(n=20000)
  out = noise.signal_noise(KEY, z, sigma=sigma, per_sample=True)
  d = np.asarray(out / z - 1.0, np.float64)
  np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-5)
  row_d = d[:, 0]
  assert abs(row_d.mean()) < 0.01
  np.testing.assert_allclose(row_d.var(), sigma**2, rtol=0.05)


def test_signal_noise_keeps_dtype():
  z = _logits().astype(jnp.bfloat16)
  out = noise.signal_noise(KEY, z, sigma=0.1)
  chex.assert_type(out, jnp.bfloat16)
  chex.assert_shape(out, z.shape)


# ----------------------------------------------------------------------------
# Gaussian input noise.


def test_gaussian_input_noise_std():
  sigma = 0.1
  x = jnp.full((64, 32, 32, 3), 0.5, jnp.float32)
  out = noise.gaussian_input_noise(KEY, x, sigma=sigma)
  chex.assert_shape(out, x.shape)
  delta = np.asarray(out - x, np.float64)
  assert abs(delta.mean()) < 0.002
  np.testing.assert_allclose(delta.std(), sigma, rtol=0.02)
  # Per pixel: neighbouring channels are not equal.
  assert np.mean(delta[..., 0] == delta[..., 1]) < 0.01


def test_gaussian_input_noise_clip():
  x = _images(n=16)
  unclipped = np.asarray(noise.gaussian_input_noise(KEY, x, sigma=0.5))
  clipped = np.asarray(noise.gaussian_input_noise(KEY, x, sigma=0.5, clip=True))
  assert unclipped.min() < 0 and unclipped.max() > 1  # the default does not clip
  assert clipped.min() == 0.0 and clipped.max() == 1.0
  np.testing.assert_array_equal(clipped, np.clip(unclipped, 0.0, 1.0))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_gaussian_input_noise_keeps_dtype(dtype):
  x = _images().astype(dtype)
  out = noise.gaussian_input_noise(KEY, x, sigma=0.05, clip=True)
  chex.assert_type(out, dtype)
  chex.assert_shape(out, x.shape)


# ----------------------------------------------------------------------------
# Label corruption.


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5])
def test_corrupt_labels_rate(p):
  labels = _labels(n=100_000)
  out = np.asarray(noise.corrupt_labels(KEY, labels, p=p, num_classes=10))
  rate = np.mean(out != np.asarray(labels))
  assert abs(rate - p) < 0.01, rate


def test_corrupt_labels_always_wrong_and_uniform():
  n, c, true = 90_000, 10, 3
  labels = jnp.full((n,), true, jnp.int32)
  out = np.asarray(noise.corrupt_labels(KEY, labels, p=1.0, num_classes=c))
  assert np.all(out != true)
  assert out.min() >= 0 and out.max() < c
  counts = np.bincount(out, minlength=c)
  assert counts[true] == 0
  wrong = np.delete(counts, true)
  np.testing.assert_allclose(wrong, n / (c - 1), rtol=0.05)


def test_corrupt_labels_offsets_uniform_for_mixed_labels():
  c = 10
  labels = _labels(n=90_000, c=c)
  out = np.asarray(noise.corrupt_labels(KEY, labels, p=1.0, num_classes=c))
  offsets = (out - np.asarray(labels)) % c
  counts = np.bincount(offsets, minlength=c)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:], len(out) / (c - 1), rtol=0.05)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.int16])
def test_corrupt_labels_keeps_dtype(dtype):
  labels = _labels(dtype=dtype)
  out = noise.corrupt_labels(KEY, labels, p=0.5, num_classes=10)
  chex.assert_type(out, dtype)
  chex.assert_shape(out, labels.shape)
  assert np.all(np.asarray(out) < 10)


def test_corrupt_labels_two_classes_flips():
  labels = _labels(n=1000, c=2)
  out = noise.corrupt_labels(KEY, labels, p=1.0, num_classes=2)
  np.testing.assert_array_equal(out, 1 - labels)


# ----------------------------------------------------------------------------
# Random swapping.


@pytest.mark.parametrize("mode", ["top2", "all"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_swap_matches_reference_rule(mode, p):
  probs = np.asarray(_probs(n=400, scale=0.5))
  threshold = 0.03
  out = np.asarray(noise.swap_probs(KEY, probs, p=p, threshold=threshold, mode=mode))
  ref = np.stack([_ref_swap_row(r, True, threshold, mode) for r in probs])
  would_change = np.any(ref != probs, axis=1)
  changed = np.any(out != probs, axis=1)
  assert would_change.sum() > 50  # the check covers real swaps
  # Every row is either the rule applied to it (eligible) or untouched (not eligible).
  np.testing.assert_array_equal(out[changed], ref[changed])
  np.testing.assert_array_equal(out[~changed], probs[~changed])
  assert not np.any(changed & ~would_change)
  if p == 1.0:
    np.testing.assert_array_equal(out, ref)
  else:
    assert 0.35 < changed.sum() / would_change.sum() < 0.65


def test_swap_top2_touches_only_top_two_and_only_under_threshold():
  probs = np.asarray(_probs(n=2000, scale=0.5))
  threshold = 0.02
  out = np.asarray(noise.swap_probs(KEY, probs, p=1.0, threshold=threshold, mode="top2"))
  order = np.argsort(-probs, axis=1, kind="stable")
  rows = np.arange(len(probs))[:, None]
  sorted_in, sorted_out = probs[rows, order], out[rows, order]
  np.testing.assert_array_equal(sorted_out[:, 2:], sorted_in[:, 2:])  # ranks >= 2 untouched
  gap = sorted_in[:, 0] - sorted_in[:, 1]
  swapped = sorted_out[:, 0] != sorted_in[:, 0]
  np.testing.assert_array_equal(swapped, gap < threshold)  # p=1: exactly the close pairs
  np.testing.assert_array_equal(sorted_out[swapped, 0], sorted_in[swapped, 1])
  np.testing.assert_array_equal(sorted_out[swapped, 1], sorted_in[swapped, 0])
  assert 0 < swapped.sum() < len(probs)


@pytest.mark.parametrize("mode", ["top2", "all"])
def test_swap_preserves_row_values_and_sums(mode):
  probs = np.asarray(_probs(n=500, scale=0.3))
  out = np.asarray(noise.swap_probs(KEY, probs, p=1.0, threshold=0.05, mode=mode))
  assert not np.array_equal(out, probs)
  np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(probs, axis=1))
  np.testing.assert_allclose(out.sum(axis=1), probs.sum(axis=1), rtol=0, atol=1e-6)


def test_swap_top2_always_swaps_with_p1_and_huge_threshold():
  probs = np.asarray(_probs(n=1000, scale=2.0))
  out = np.asarray(noise.swap_probs(KEY, probs, p=1.0, threshold=10.0, mode="top2"))
  top, second = np.argsort(-probs, axis=1, kind="stable")[:, :2].T
  rows = np.arange(len(probs))
  np.testing.assert_array_equal(out[rows, top], probs[rows, second])
  np.testing.assert_array_equal(out[rows, second], probs[rows, top])


@pytest.mark.parametrize("mode", ["top2", "all"])
def test_swap_threshold_zero_changes_nothing(mode):
  probs = jnp.asarray(np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.3, 0.2, 0.0]], np.float32))
  probs = jnp.concatenate([probs, _probs(n=200, c=4)])
  out = noise.swap_probs(KEY, probs, p=1.0, threshold=0.0, mode=mode)
  np.testing.assert_array_equal(out, probs)


@pytest.mark.parametrize("mode", ["top2", "all"])
def test_swap_difference_equal_to_threshold_does_not_swap(mode):
  # Exact binary fractions: every difference is exactly 0.25 or 0.5, never < 0.25.
  probs = np.array([[0.5, 0.25, 0.0, 0.25], [0.25, 0.0, 0.75, 0.0]], np.float32)
  out = noise.swap_probs(KEY, probs, p=1.0, threshold=0.25, mode=mode)
  np.testing.assert_array_equal(out, probs)
  out = noise.swap_probs(KEY, probs[:1], p=1.0, threshold=0.2500001, mode="top2")
  np.testing.assert_array_equal(out, np.array([[0.25, 0.5, 0.0, 0.25]], np.float32))


def test_swap_all_walks_pairs_in_turn_on_current_values():
  probs = np.array(
      [
          [0.5, 0.3, 0.2],  # huge threshold: 0.5 travels to the bottom
          [0.2, 0.5, 0.3],  # same, unsorted input
          [0.45, 0.4, 0.15],
      ],  # 0.45<->0.4 swaps; then 0.45-0.15 >= 0.1: stop
      np.float32,
  )
  out = noise.swap_probs(KEY, probs[:2], p=1.0, threshold=10.0, mode="all")
  np.testing.assert_array_equal(out, np.array([[0.3, 0.2, 0.5], [0.5, 0.3, 0.2]], np.float32))
  out = noise.swap_probs(KEY, probs[2:], p=1.0, threshold=0.1, mode="all")
  np.testing.assert_array_equal(out, np.array([[0.4, 0.45, 0.15]], np.float32))
  # Current values, not the original ones: .3 .25 .2 with threshold .07 swaps ranks 0 and 1,
  # then compares .3 - .2 (no swap); comparing the original .25 - .2 would swap ranks 1 and 2.
  out = noise.swap_probs(
      KEY, np.array([[0.3, 0.25, 0.2]], np.float32), p=1.0, threshold=0.07, mode="all"
  )
  np.testing.assert_array_equal(out, np.array([[0.25, 0.3, 0.2]], np.float32))


def test_swap_ties_are_deterministic():
  probs = np.array(
      [[0.3, 0.2, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [0.4, 0.4, 0.2, 0.0]], np.float32
  )
  out_all = noise.swap_probs(KEY, probs, p=1.0, threshold=1.0, mode="all")
  # Stable order of row 0 is indices 0, 2, 1, 3 -> .3 .3 .2 .2 -> walk -> .3 .2 .2 .3.
  expected = np.array(
      [[0.3, 0.2, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25], [0.4, 0.2, 0.0, 0.4]], np.float32
  )
  np.testing.assert_array_equal(out_all, expected)
  out_top2 = noise.swap_probs(KEY, probs, p=1.0, threshold=1.0, mode="top2")
  np.testing.assert_array_equal(out_top2, probs)  # swapping tied top values is a no-op
  for seed in range(3):
    np.testing.assert_array_equal(
        noise.swap_probs(jax.random.PRNGKey(seed), probs, p=1.0, threshold=1.0, mode="all"),
        expected,
    )


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_swap_rate_close_to_p(p):
  n = 20_000
  # Top-2 gap of 0.02 in every row, well under the threshold.
  probs = np.tile(np.array([0.2, 0.41, 0.39], np.float32), (n, 1))
  out = np.asarray(noise.swap_probs(KEY, probs, p=p, threshold=0.05, mode="top2"))
  swapped = np.any(out != probs, axis=1)
  assert abs(swapped.mean() - p) < 0.02, swapped.mean()


def test_swap_keeps_dtype():
  probs = _probs().astype(jnp.bfloat16)
  out = noise.swap_probs(KEY, probs, p=1.0, threshold=0.1, mode="all")
  chex.assert_type(out, jnp.bfloat16)
  chex.assert_shape(out, probs.shape)


# ----------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize(
    "call, argname",
    [
        (lambda: noise.signal_noise(KEY, _logits(), sigma=-1), "sigma"),
        (lambda: noise.signal_noise(KEY, _logits(), sigma=float("nan")), "sigma"),
        (lambda: noise.signal_noise(KEY, jnp.ones((2, 3), jnp.int32), sigma=0.1), "logits"),
        (lambda: noise.gaussian_input_noise(KEY, _images(), sigma=-0.1), "sigma"),
        (
            lambda: noise.gaussian_input_noise(KEY, jnp.ones((1, 2, 2, 3), jnp.uint8), sigma=0.1),
            "images",
        ),
        (lambda: noise.corrupt_labels(KEY, _labels(), p=-0.1, num_classes=10), "p"),
        (lambda: noise.corrupt_labels(KEY, _labels(), p=1.5, num_classes=10), "p"),
        (lambda: noise.corrupt_labels(KEY, _labels(), p=0.1, num_classes=1), "num_classes"),
        (lambda: noise.corrupt_labels(KEY, _labels(), p=0.1, num_classes=2.5), "num_classes"),
        (lambda: noise.corrupt_labels(KEY, jnp.ones(3), p=0.1, num_classes=10), "labels"),
        (lambda: noise.swap_probs(KEY, _probs(), p=-0.5, threshold=0.1, mode="top2"), "p"),
        (lambda: noise.swap_probs(KEY, _probs(), p=2, threshold=0.1, mode="all"), "p"),
        (lambda: noise.swap_probs(KEY, _probs(), p=0.5, threshold=-0.1, mode="top2"), "threshold"),
        (lambda: noise.swap_probs(KEY, _probs(), p=0.5, threshold=0.1, mode="top3"), "mode"),
        (lambda: noise.swap_probs(KEY, _probs()[0], p=0.5, threshold=0.1, mode="all"), "probs"),
        (
            lambda: noise.swap_probs(KEY, jnp.ones((4, 1)), p=0.5, threshold=0.1, mode="all"),
            "probs",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, argname):
  with pytest.raises(ValueError, match=rf"^{argname} "):
    call()


def test_bad_level_raises_even_when_zero_would_shortcut():
  # Validation happens before the level-0 shortcut of the other arguments.
  with pytest.raises(ValueError, match="^mode "):
    noise.swap_probs(KEY, _probs(), p=0, threshold=0.1, mode="bogus")
  with pytest.raises(ValueError, match="^num_classes "):
    noise.corrupt_labels(KEY, _labels(), p=0, num_classes=0)


# ----------------------------------------------------------------------------
# Stream tags.


def test_step_keys_are_fold_in_and_streams_differ():
  step_key = jax.random.PRNGKey(42)
  streams = {}
  for name, tag in keys.STEP_KEY_TAGS.items():
    k = keys.step_key_for(step_key, name)
    np.testing.assert_array_equal(
        jax.random.key_data(k), jax.random.key_data(jax.random.fold_in(step_key, tag))
    )
    streams[name] = np.asarray(jax.random.key_data(k)).tobytes()
  assert len(set(streams.values())) == len(streams)
  assert np.asarray(step_key).tobytes() not in streams.values()


def test_step_key_unknown_name():
  with pytest.raises(KeyError, match="unknown step stream 'dropuot'"):
    keys.step_key_for(KEY, "dropuot")
