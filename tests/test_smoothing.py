"""Randomized smoothing (Cohen et al. 2019): statistics, CERTIFY/PREDICT on a linear classifier
with a closed-form answer, reproducibility and batch-size invariance of the device sampling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from helpers import trained_tiny
from nkd.errors import ConfigError
from nkd.evaluation import smoothing
from nkd.models.wrn import create_model, init_variables

SHAPE = (4, 4, 3)  # tiny NHWC images: the linear model only needs a vector


def linear_apply(variables, images):
  """f(x) = 1[w.x + b > 0] as two logits (-s, s) on flattened images."""
  s = images.reshape(images.shape[0], -1) @ variables["w"] + variables["b"]
  return jnp.stack([-s, s], axis=-1)


def multiclass_apply(variables, images):
  return images.reshape(images.shape[0], -1) @ variables["w"] + variables["b"]


def _linear(seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=int(np.prod(SHAPE))).astype(np.float32)
  return {"w": jnp.asarray(w), "b": jnp.float32(0.3)}


def _points_at(variables, distances):
  """Images whose signed L2 distance to the boundary w.x + b = 0 is each of `distances`."""
  w, b = np.asarray(variables["w"], np.float64), float(variables["b"])
  x0 = np.full(w.shape, 0.5)
  on_boundary = x0 - (w @ x0 + b) / (w @ w) * w
  points = np.stack([on_boundary + d * w / np.linalg.norm(w) for d in distances])
  points = points.astype(np.float32)
  exact = (points.astype(np.float64) @ w + b) / np.linalg.norm(w)
  return points.reshape(-1, *SHAPE), exact


def _multiclass(seed=1, classes=10):
  rng = np.random.default_rng(seed)
  return {
      "w": jnp.asarray(rng.normal(size=(int(np.prod(SHAPE)), classes)), jnp.float32),
      "b": jnp.zeros(classes, jnp.float32),
  }


# ---------------------------------------------------------------------------------------------
# Statistics.


@pytest.mark.parametrize(
    "k, n, alpha",
    [
        (0, 10, 0.05),
        (1, 10, 0.05),
        (7, 10, 0.001),
        (10, 10, 0.01),
        (500, 1000, 0.001),
        (99_990, 100_000, 0.001),
        (100_000, 100_000, 0.001),
    ],
)
def test_clopper_pearson_against_scipy_beta(k, n, alpha):
  lower = smoothing.clopper_pearson_lower(k, n, alpha)
  expected = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
  assert lower == pytest.approx(expected, rel=1e-12, abs=0)
  if k > 0:  # the defining property: P(Binom(n, lower) >= k) = alpha
    assert stats.binom.sf(k - 1, n, lower) == pytest.approx(alpha, rel=1e-6)
  if k == n:
    assert lower == pytest.approx(alpha ** (1 / n), rel=1e-10)
  lo, hi = smoothing.clopper_pearson_interval(k, n, alpha)
  assert lo == pytest.approx(
      0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1), rel=1e-12, abs=0
  )
  assert hi == pytest.approx(
      1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k), rel=1e-9
  )
  if k == 0:
    assert hi == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-9)
  assert lo <= k / n <= hi
  # The reference's bound: proportion_confint(k, n, alpha=2 * alpha, method="beta")[0].
  assert smoothing.clopper_pearson_interval(k, n, 2 * alpha)[0] == pytest.approx(lower, rel=1e-12)


def test_binomial_test_and_predict_rule():
  assert smoothing.binomial_test(50, 100) == pytest.approx(1.0)
  assert smoothing.binomial_test(60, 100) == pytest.approx(stats.binomtest(60, 100, 0.5).pvalue)
  assert smoothing.binomial_test(10, 10) == pytest.approx(2 * 0.5**10)
  clear = smoothing.predict_from_counts([2, 95, 3], alpha=0.001)
  assert clear["prediction"] == 1 and clear["count"] == 95 and clear["count_second"] == 3
  assert smoothing.predict_from_counts([40, 60, 0], alpha=0.001)["prediction"] == -1
  assert smoothing.predict_from_counts([0, 50, 50], alpha=0.5)["prediction"] == -1  # tie
  assert smoothing.predict_from_counts([100], alpha=0.001)["prediction"] == 0  # one class


def test_radius_formula_and_abstention():
  sigma, alpha, n = 0.25, 0.001, 100_000
  # Every draw in class 1: pA_lower = alpha^(1/n), the largest radius n allows (~0.95 at 0.25).
  top = smoothing.certify_from_counts([3, 97], [0, n], sigma=sigma, alpha=alpha)
  assert top["prediction"] == 1 and top["count"] == n
  assert top["p_a_lower"] == pytest.approx(alpha ** (1 / n), rel=1e-12)
  assert top["radius"] == pytest.approx(sigma * stats.norm.ppf(alpha ** (1 / n)), rel=1e-9)
  assert top["radius"] == pytest.approx(0.953, abs=1e-3)
  for n_a in (60_000, 80_000, 99_000):
    result = smoothing.certify_from_counts([0, 100], [n - n_a, n_a], sigma=0.5, alpha=alpha)
    assert result["radius"] == pytest.approx(
        0.5 * stats.norm.ppf(stats.beta.ppf(alpha, n_a, n - n_a + 1)), rel=1e-9
    )
  assert smoothing.certified_radius(0.5, 1.0) == 0.0
  # The class comes from the selection counts; the estimate only bounds it.
  assert smoothing.certify_from_counts([90, 10], [10, 90], sigma=1.0)["prediction"] == -1
  # Abstain exactly when pA_lower <= 1/2: find the smallest nA that certifies.
  n_small = 1000
  first = next(
      k for k in range(n_small + 1) if smoothing.clopper_pearson_lower(k, n_small, alpha) > 0.5
  )
  below = smoothing.certify_from_counts([1, 0], [first - 1, n_small - first + 1], sigma=1.0)
  above = smoothing.certify_from_counts([1, 0], [first, n_small - first], sigma=1.0)
  assert below == {
      "prediction": -1,
      "radius": 0.0,
      "count": first - 1,
      "p_a_lower": pytest.approx(below["p_a_lower"]),
  }
  assert above["prediction"] == 0 and above["radius"] > 0


def test_select_indices_and_curve():
  np.testing.assert_array_equal(smoothing.select_indices(10_000, 500), np.arange(0, 10_000, 20))
  np.testing.assert_array_equal(smoothing.select_indices(40, 7), np.arange(0, 35, 5))
  np.testing.assert_array_equal(smoothing.select_indices(40, 0), np.arange(40))
  np.testing.assert_array_equal(smoothing.select_indices(40, 3, skip=2), [0, 2, 4])
  examples = [
      {"correct": True, "radius": 0.3},
      {"correct": True, "radius": 1.2},
      {"correct": False, "radius": 0.9},
      {"correct": False, "radius": 0.0},
  ]
  assert smoothing.certified_accuracy_curve(examples) == {
      "0.0": 50.0,
      "0.25": 50.0,
      "0.5": 25.0,
      "0.75": 25.0,
      "1.0": 25.0,
  }


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"sigma": 0.0}, "--smoothing_sigma"),
        ({"sigma": -0.5}, "--smoothing_sigma"),
        ({"sigma": float("nan")}, "--smoothing_sigma"),
        ({"n0": 0}, "--smoothing_n0"),
        ({"n": 0}, "--smoothing_n"),
        ({"n": 10.5}, "--smoothing_n"),
        ({"alpha": 0.0}, "--smoothing_alpha"),
        ({"alpha": 1.0}, "--smoothing_alpha"),
        ({"alpha": 1.5}, "--smoothing_alpha"),
        ({"num_examples": -1}, "--smoothing_num_examples"),
        ({"num_examples": 41}, "--smoothing_num_examples"),
        ({"batch_size": 0}, "--smoothing_batch_size"),
        ({"dtype": "float16"}, "--smoothing_dtype"),
    ],
)
def test_bad_input_names_the_flag(kwargs, flag):
  images = np.zeros((40, *SHAPE), np.float32)
  args = {"sigma": 0.25, "n0": 10, "n": 10, **kwargs}
  with pytest.raises(ConfigError, match=flag):
    smoothing.certify_dataset(
        linear_apply, _linear(), jax.random.key(0), images, np.zeros(40, int), **args
    )
  if "n0" not in kwargs:
    args = {"sigma": 0.25, "n": 10, **kwargs}
    flag = "--smoothing_predict_n" if flag == "--smoothing_n" else flag
    with pytest.raises(ConfigError, match=flag):
      smoothing.predict_dataset(
          linear_apply, _linear(), jax.random.key(0), images, np.zeros(40, int), **args
      )


# ---------------------------------------------------------------------------------------------
# A linear classifier: g and the distance to its boundary are known in closed form.


def test_linear_radius_below_true_distance_and_converges():
  variables, sigma = _linear(), 0.5
  images, exact = _points_at(variables, [0.05, 0.25, 0.6, 1.0, -0.4, -1.3])
  labels = (exact > 0).astype(int)
  gaps = {}
  for n in (1_000, 100_000):
    summary, per_example = smoothing.certify_dataset(
        linear_apply,
        variables,
        jax.random.key(3),
        images,
        labels,
        sigma=sigma,
        n=n,
        num_examples=0,
        batch_size=8192,
        num_classes=2,
    )
    assert summary["num_examples"] == 6 and summary["skip"] == 1
    radius = np.array([e["radius"] for e in per_example])
    assert np.all(radius <= np.abs(exact))  # never more than the true distance
    for e, d in zip(per_example, exact):
      assert e["prediction"] in (-1, int(d > 0))
      if n == 100_000:  # the counts estimate pA = Phi(|w.x + b| / (sigma ||w||))
        p_a = stats.norm.cdf(abs(d) / sigma)
        assert abs(e["count"] / n - p_a) < 5 * np.sqrt(p_a * (1 - p_a) / n)
    gaps[n] = np.abs(exact) - radius
  assert np.all(gaps[100_000] <= gaps[1_000] + 1e-9)
  assert gaps[100_000].max() < 0.03 < gaps[1_000].max()
  assert summary["abstain_rate"] == 0.0 and summary["certified_accuracy"]["0.0"] == 100.0
  assert summary["certified_accuracy"]["1.0"] == pytest.approx(100 / 6)  # only d = -1.3


def test_abstains_on_the_boundary():
  variables = _linear()
  images, exact = _points_at(variables, [0.0])
  assert abs(exact[0]) < 1e-5
  key = jax.random.key(4)
  assert smoothing.certify(
      linear_apply, variables, key, images[0], sigma=0.5, n=10_000, batch_size=4096
  ) == (-1, 0.0)
  assert smoothing.predict(linear_apply, variables, key, images[0], sigma=0.5) == -1
  counts = smoothing.sample_counts(
      linear_apply, variables, key, images[0], sigma=0.5, num=10_000, batch_size=4096
  )
  assert abs(counts[1] / 10_000 - 0.5) < 0.02


def test_same_key_same_result_and_certify_matches_dataset():
  variables = _linear()
  images, exact = _points_at(variables, [0.1, -0.2, 0.3, 0.02, -0.05])
  labels = (exact > 0).astype(int)
  run = lambda key: smoothing.certify_dataset(  # noqa: E731
      linear_apply,
      variables,
      key,
      images,
      labels,
      sigma=0.5,
      n=2000,
      num_examples=0,
      batch_size=512,
  )[1]
  first, again, other = run(jax.random.key(5)), run(jax.random.key(5)), run(jax.random.key(6))
  assert first == again
  assert [e["count"] for e in first] != [e["count"] for e in other]
  # One image alone, with its test-set index, is certified exactly as in the data set.
  assert smoothing.certify(
      linear_apply,
      variables,
      jax.random.key(5),
      images[3],
      sigma=0.5,
      n=2000,
      batch_size=300,
      image_index=3,
  ) == (first[3]["prediction"], first[3]["radius"])
  summary, per_example = smoothing.predict_dataset(
      linear_apply, variables, jax.random.key(5), images, labels, sigma=0.5, num_examples=0
  )
  assert summary["accuracy"] + summary["abstain_rate"] + summary["error_rate"] == pytest.approx(
      100.0
  )
  assert (
      per_example
      == smoothing.predict_dataset(
          linear_apply, variables, jax.random.key(5), images, labels, sigma=0.5, num_examples=0
      )[1]
  )


def test_counts_independent_of_batch_size_and_draws_follow_draw_key():
  variables = _multiclass()
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
  indices = np.array([7, 0, 12])
  key, num, sigma = jax.random.key(8), 37, 0.5
  counts = {
      b: smoothing.count_draws(
          multiclass_apply,
          variables,
          key,
          images,
          indices,
          sigma=sigma,
          num=num,
          batch_size=b,
          stream=1,
      )
      for b in (1, 5, 37, 64, 1000)
  }
  for b, c in counts.items():
    chex.assert_shape(c, (3, 10))
    assert c.dtype == np.int64 and np.all(c.sum(axis=1) == num), b
    np.testing.assert_array_equal(c, counts[1], err_msg=f"batch size {b}")
  assert (counts[1] > 0).sum() > 6  # the noise really mixes classes: a sensitive check
  # Each image alone (its own index) gives the same counts: no dependence on the other images.
  for i in range(3):
    np.testing.assert_array_equal(
        smoothing.sample_counts(
            multiclass_apply,
            variables,
            key,
            images[i],
            sigma=sigma,
            num=num,
            batch_size=16,
            image_index=int(indices[i]),
            stream=1,
        ),
        counts[1][i],
    )
  with pytest.raises(ValueError, match="num_classes"):
    smoothing.count_draws(
        multiclass_apply,
        variables,
        key,
        images,
        indices,
        sigma=sigma,
        num=num,
        batch_size=64,
        num_classes=3,
    )
  # Draw j of image i is normal(draw_key(key, i, stream, j)), nothing else.
  keys = jax.vmap(lambda j: smoothing.draw_key(key, 12, 1, j))(jnp.arange(num))
  noise = jax.vmap(lambda k: jax.random.normal(k, SHAPE))(keys)
  predictions = np.argmax(multiclass_apply(variables, images[2] + sigma * noise), axis=-1)
  np.testing.assert_array_equal(np.bincount(predictions, minlength=10), counts[1][2])


# ---------------------------------------------------------------------------------------------
# A tiny WRN: one compilation per batch shape, shared by models of the same architecture.


def test_wrn_compiles_once_and_bfloat16_counts_are_exact():
  tiny = trained_tiny()
  images, labels = tiny.test_images, tiny.test_labels
  args = dict(sigma=0.12, n0=20, n=200, num_examples=8, batch_size=100)
  before = smoothing.counts_core_cache_size()
  summary, per_example = smoothing.certify_dataset(
      tiny.apply_fn, tiny.variables, jax.random.key(0), images, labels, **args
  )
  traced = smoothing.counts_core_cache_size() - before
  assert traced <= 2  # the n0 and the n call shapes
  assert [e["index"] for e in per_example] == list(range(0, 40, 5))
  assert summary["indices"].startswith("test indices 0, 5, 10,") and summary["num_test"] == 40
  assert set(summary["certified_accuracy"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
  accuracies = list(summary["certified_accuracy"].values())
  assert accuracies == sorted(accuracies, reverse=True)
  assert summary["certified_accuracy"] == smoothing.certified_accuracy_curve(per_example)
  assert summary["certified_accuracy"]["0.0"] >= 50.0  # a trained model on easy images
  correct = [e["radius"] for e in per_example if e["correct"]]
  assert summary["mean_radius_correct"] == pytest.approx(np.mean(correct))
  assert summary["forward_passes"] == 8 * 220
  # Another model of the same architecture compiles nothing.
  other = init_variables(tiny.model, jax.random.key(9))
  smoothing.certify_dataset(tiny.apply_fn, other, jax.random.key(0), images, labels, **args)
  assert smoothing.counts_core_cache_size() - before == traced
  # bfloat16 forward passes (a bf16 clone of the module): integer counts summing to n.
  bf16_apply = smoothing.smoothing_apply_fn(tiny.model, "bfloat16")
  assert bf16_apply is smoothing.smoothing_apply_fn(tiny.model, "bfloat16")
  assert smoothing.smoothing_apply_fn(tiny.model, "float32") is tiny.apply_fn
  image = tiny.test_unit[0]
  counts32 = smoothing.sample_counts(
      tiny.apply_fn, tiny.variables, jax.random.key(1), image, sigma=0.12, num=200, batch_size=100
  )
  counts16 = smoothing.sample_counts(
      bf16_apply,
      tiny.variables,
      jax.random.key(1),
      image,
      sigma=0.12,
      num=200,
      batch_size=100,
      dtype="bfloat16",
  )
  assert counts16.dtype == np.int64 and counts16.sum() == 200
  assert np.argmax(counts16) == np.argmax(counts32)
  assert np.abs(counts16 - counts32).sum() <= 20


def test_write_per_example(tmp_path):
  rows = [
      {
          "index": 0,
          "label": 1,
          "prediction": 1,
          "radius": 0.5,
          "correct": True,
          "count": 90,
          "p_a_lower": 0.8,
      }
  ]
  smoothing.write_per_example(tmp_path / "certify.tsv", rows)
  lines = (tmp_path / "certify.tsv").read_text().splitlines()
  assert lines == [
      "idx\tlabel\tpredict\tradius\tcorrect\tcount\tp_a_lower",
      "0\t1\t1\t0.5\t1\t90\t0.8",
  ]


def test_suite_writes_the_smoothing_section_and_side_file(tmp_path):
  from nkd.config.evaluation import EvalOptions
  from nkd.evaluation.suite import run_suite

  tiny = trained_tiny(input_noise_sigma=0.1)
  options = EvalOptions(
      eval_suite="smoothing",
      smoothing_n0=8,
      smoothing_n=64,
      smoothing_num_examples=4,
      smoothing_batch_size=32,
  )
  out = run_suite(
      tiny.apply_fn,
      tiny.variables,
      key=jax.random.key(0),
      test_images=tiny.test_images,
      test_labels=tiny.test_labels,
      options=options,
      input_noise_sigma=0.1,
      output_dir=str(tmp_path),
  )
  section = out["smoothing"]
  assert section["sigma"] == 0.1 and section["num_examples"] == 4
  assert set(section["certified_accuracy"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
  lines = (tmp_path / section["per_example_file"]).read_text().splitlines()
  assert len(lines) == 5  # header + one line per certified image


@pytest.mark.parametrize(
    "overrides, flag",
    [
        (dict(), "--smoothing_sigma"),
        (dict(smoothing_sigma=-0.1), "--smoothing_sigma"),
        (dict(smoothing_sigma=0.25, smoothing_n=0), "--smoothing_n"),
        (dict(smoothing_sigma=0.25, smoothing_n0=0), "--smoothing_n0"),
        (dict(smoothing_sigma=0.25, smoothing_alpha=1.0), "--smoothing_alpha"),
    ],
)
def test_smoothing_options_name_the_flag(tmp_path, overrides, flag):
  from helpers import tiny_config

  with pytest.raises(ConfigError, match=flag):
    tiny_config(tmp_path, eval_suite="accuracy,smoothing", **overrides)
