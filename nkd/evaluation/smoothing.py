"""Randomized smoothing: PREDICT and CERTIFY of Cohen, Rosenfeld & Kolter (ICML 2019), in JAX.

The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I), is robust in
L2: if the top class has probability pA >= pA_lower > 1/2, g is constant within radius
sigma * Phi^-1(pA_lower) of x (Theorem 1 with pB = 1 - pA). The Monte Carlo algorithms follow
the paper's Algorithm ("Prediction and certification") and its public reference code
(github.com/locuslab/smoothing, `code/core.py`, `certify.py`, `analyze.py`), with the
reference's constants:

* CERTIFY: n0 = 100 draws select the top class cA (argmax of the counts, ties to the lowest
  class); n = 100,000 fresh draws give nA = counts[cA]; pA_lower is the one-sided (1 - alpha)
  Clopper-Pearson lower bound, alpha = 0.001 (the reference's
  `proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]`). It returns (cA,
  sigma * Phi^-1(pA_lower)), or abstains (ABSTAIN = -1, radius 0) when pA_lower <= 0.5.
* PREDICT: n = 100 draws; the top two counts nA >= nB; abstain unless the two-sided binomial
  test of nA successes in nA + nB trials at p = 1/2 has p-value <= alpha (Hung & Fithian 2019).
* Certified accuracy at radius r (the reference's `analyze.py`): the fraction of examples that
  are correct (not abstained) with radius >= r. The data set is every `skip`-th test image from
  index 0 (the reference certifies CIFAR-10 with `--skip 20`: 500 of 10,000 images).

The noise is added in [0, 1] pixel units to the image before the model's normalisation (the
reference's NormalizeLayer is the first layer of its model; ours normalise inside too), and it
is not clipped, as Soft Randomization's training noise.

Reproducibility: draw j of the image with test-set index i in stream s (0: CERTIFY's selection,
1: CERTIFY's estimation, 2: PREDICT) has noise
`normal(fold_in(fold_in(fold_in(key, i), s), j), image.shape)`. It depends on nothing else, so
the counts do not depend on the batch size, on which other images are certified, or on their
order (up to the floating-point rounding of the forward pass, which XLA may compute differently
for different batch shapes on an accelerator). The selection and estimation draws are
independent, as the algorithm needs.

Throughput: all draws of a set of images are laid end to end (image after image, n draws each)
and cut into device calls of `batch_size` noisy copies; one jitted call generates the noise,
runs the forward pass, takes the argmax and sums one-hot counts per image on the device, and
only (images in the call, num_classes) int32 counts come back. Several images share a call
when n < batch_size; the last call is padded and its padding masked out. The core compiles once
per (apply_fn, batch size, images per call, dtype); sigma, n and the keys are traced.
`dtype="bfloat16"` casts the noisy batch and the floating variables to bfloat16 (counts stay
exact integers); a Flax model whose layers fix their compute dtype (our WRN) computes in
bfloat16 only through `smoothing_apply_fn(model, "bfloat16")`.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import stats

from nkd.evaluation import batching
from nkd.evaluation.predict import ApplyFn, eval_apply_fn

ABSTAIN = -1

# The reference's constants (Cohen et al., `certify.py` / README).
N0 = 100
N = 100_000
ALPHA = 0.001
PREDICT_N = 100
NUM_EXAMPLES = 500  # every 20th of CIFAR-10's 10,000 test images (`--skip 20`)
BATCH_SIZE = 1000
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
DTYPES = ("float32", "bfloat16")

# Noise streams: independent draws for CERTIFY's selection, its estimation and for PREDICT.
STREAM_SELECT, STREAM_ESTIMATE, STREAM_PREDICT = 0, 1, 2

# Device calls dispatched ahead of the host reading their counts back.
_MAX_IN_FLIGHT = 32


# ---------------------------------------------------------------------------------------------
# Checks.

def _is_int(value) -> bool:
  return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)))


def check_smoothing_options(*, sigma=None, n0=None, n=None, alpha=None, num_examples=None,
                            batch_size=None, dtype=None, predict_n=None) -> None:
  """ValueError naming the flag (--smoothing_sigma, ...) for values smoothing cannot use."""
  if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
    raise ValueError(f"--smoothing_sigma must be a finite number > 0, got {sigma}")
  for flag, value in (("--smoothing_n0", n0), ("--smoothing_n", n),
                      ("--smoothing_predict_n", predict_n),
                      ("--smoothing_batch_size", batch_size)):
    if value is not None and not (_is_int(value) and value >= 1):
      raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
  if alpha is not None and not (np.isfinite(alpha) and 0 < alpha < 1):
    raise ValueError(f"--smoothing_alpha must be in (0, 1), got {alpha}")
  if num_examples is not None and not (_is_int(num_examples) and num_examples >= 0):
    raise ValueError(f"--smoothing_num_examples must be an integer >= 0 (0: every test image), "
                     f"got {num_examples!r}")
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"--smoothing_dtype must be one of {DTYPES}, got {dtype!r}")


def _check_counts(k: int, n: int) -> None:
  if not (_is_int(k) and _is_int(n) and 0 <= k <= n and n >= 1):
    raise ValueError(f"need integer counts 0 <= k <= n, n >= 1; got k={k!r}, n={n!r}")


def _check_alpha(alpha: float) -> None:
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")


# ---------------------------------------------------------------------------------------------
# Statistics (scipy; the reference's statsmodels calls written out).

def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
  """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from k of n:
  the alpha quantile of Beta(k, n - k + 1), 0 when k = 0. Equal to the reference's
  `proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`."""
  _check_counts(k, n)
  _check_alpha(alpha)
  if k == 0:
    return 0.0
  return float(stats.beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_interval(k: int, n: int, alpha: float) -> tuple[float, float]:
  """Two-sided (1 - alpha) Clopper-Pearson interval, statsmodels'
  `proportion_confint(k, n, alpha, method="beta")`: quantiles alpha/2 of Beta(k, n - k + 1)
  and 1 - alpha/2 of Beta(k + 1, n - k), with 0 at k = 0 and 1 at k = n."""
  _check_counts(k, n)
  _check_alpha(alpha)
  lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
  upper = 1.0 if k == n else float(stats.beta.isf(alpha / 2, k + 1, n - k))
  return lower, upper


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
  """Two-sided exact binomial test p-value (the reference's `scipy.stats.binom_test`)."""
  _check_counts(k, n)
  return float(stats.binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def certified_radius(p_a_lower: float, sigma: float) -> float:
  """Theorem 1 with pB = 1 - pA: sigma * Phi^-1(pA_lower) (> 0 iff pA_lower > 1/2)."""
  return float(sigma * stats.norm.ppf(p_a_lower))


def certify_from_counts(counts_select, counts_estimate, *, sigma: float,
                        alpha: float = ALPHA) -> dict:
  """CERTIFY's decision from the selection (n0) and estimation (n) counts.

  Returns {"prediction" (ABSTAIN = -1), "radius" (0 when abstaining), "count" (nA),
  "p_a_lower"}. Abstains when pA_lower <= 0.5 (the reference: < 0.5; at exactly 0.5 the
  reference would return cA with radius 0, which certifies nothing)."""
  counts_select = np.asarray(counts_select)
  counts_estimate = np.asarray(counts_estimate)
  c_a = int(np.argmax(counts_select))
  n = int(counts_estimate.sum())
  n_a = int(counts_estimate[c_a])
  p_a_lower = clopper_pearson_lower(n_a, n, alpha)
  if p_a_lower <= 0.5:
    return {"prediction": ABSTAIN, "radius": 0.0, "count": n_a, "p_a_lower": p_a_lower}
  return {"prediction": c_a, "radius": certified_radius(p_a_lower, sigma), "count": n_a,
          "p_a_lower": p_a_lower}


def predict_from_counts(counts, *, alpha: float = ALPHA) -> dict:
  """PREDICT's decision from n counts: {"prediction" (ABSTAIN = -1), "count", "count_second",
  "p_value"}. The top two classes by count (ties: lower class first; a tie of the top two
  always abstains, as its p-value is 1)."""
  counts = np.asarray(counts)
  order = np.argsort(-counts, kind="stable")
  n_a = int(counts[order[0]])
  n_b = int(counts[order[1]]) if len(counts) > 1 else 0
  p_value = binomial_test(n_a, n_a + n_b, 0.5)
  prediction = ABSTAIN if p_value > alpha else int(order[0])
  return {"prediction": prediction, "count": n_a, "count_second": n_b, "p_value": p_value}


# ---------------------------------------------------------------------------------------------
# Sampling on the device.

def draw_key(key: jax.Array, image_index, stream, draw) -> jax.Array:
  """The key of noise draw `draw` of test image `image_index` in noise stream `stream`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, image_index), stream),
                            draw)


def _cast_floats(tree, dtype):
  return jax.tree.map(
      lambda v: v.astype(dtype) if jnp.issubdtype(jnp.result_type(v), jnp.floating) else v,
      tree)


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size", "num_classes", "dtype"))
def _counts_core(apply_fn, variables, key, images, image_indices, stream, first_row, num,
                 num_rows, sigma, *, batch_size, num_classes, dtype):
  """Counts (K, num_classes) int32 of one call: rows first_row .. first_row + batch_size - 1 of
  the draws of images[0], images[1], ... laid end to end (`num` each); rows >= num_rows masked."""
  k = images.shape[0]
  row = first_row + jnp.arange(batch_size, dtype=jnp.int32)
  slot = jnp.minimum(row // num, k - 1)
  draw = row % num
  valid = jnp.arange(batch_size, dtype=jnp.int32) < num_rows
  keys = jax.vmap(draw_key, in_axes=(None, 0, None, 0))(key, image_indices[slot], stream, draw)
  noise = jax.vmap(lambda kk: jax.random.normal(kk, images.shape[1:], jnp.float32))(keys)
  noisy = images[slot] + sigma * noise
  if dtype != "float32":
    noisy = noisy.astype(dtype)
    variables = _cast_floats(variables, dtype)
  predictions = jnp.argmax(apply_fn(variables, noisy), axis=-1)
  hits = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32) * valid[:, None]
  return jax.ops.segment_sum(hits, slot, num_segments=k)


def counts_core_cache_size() -> int:
  """Compiled variants of the sampling core (tests: one compilation per shape)."""
  return _counts_core._cache_size()  # pylint: disable=protected-access


def _unit_float(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def infer_num_classes(apply_fn: ApplyFn, variables, image_shape: Sequence[int]) -> int:
  """The logits' last dimension, from shapes alone (nothing compiles)."""
  spec = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  return int(jax.eval_shape(apply_fn, variables, spec).shape[-1])


def _as_key(key) -> jax.Array:
  return jax.random.key(key) if _is_int(key) else key


def _images_per_call(num: int, batch_size: int) -> int:
  """The most images a run of batch_size consecutive rows can touch (n draws per image)."""
  return (num + batch_size - 2) // num + 1


def count_draws(apply_fn: ApplyFn, variables, key, images, image_indices, *, sigma: float,
                num: int, batch_size: int = BATCH_SIZE, num_classes: int | None = None,
                stream: int = STREAM_SELECT, dtype: str = "float32",
                log_name: str = "") -> np.ndarray:
  """Counts (len(images), num_classes) int64 of the base classifier's predictions on `num`
  noisy copies of each image (uint8 or [0, 1] float NHWC); `image_indices` are the images'
  indices in the test set, which with `key` and `stream` fix every noise draw (`draw_key`)."""
  check_smoothing_options(sigma=sigma, n=num, batch_size=batch_size, dtype=dtype)
  images = _unit_float(images)
  image_indices = np.asarray(image_indices, np.int32).reshape(-1)
  if images.ndim != 4 or len(images) == 0 or len(images) != len(image_indices):
    raise ValueError(f"need NHWC images (N > 0) and N image indices, got {images.shape} and "
                     f"{image_indices.shape}")
  if num_classes is None:
    num_classes = infer_num_classes(apply_fn, variables, images.shape[1:])
  key = _as_key(key)
  n_images = len(images)
  total = n_images * int(num)
  size = max(1, min(int(batch_size), total))
  k = _images_per_call(int(num), size)
  constants = jax.device_put((np.int32(stream), np.int32(num), np.float32(sigma)))
  counts = np.zeros((n_images, num_classes), np.int64)
  pending: collections.deque = collections.deque()

  def collect():
    first, out = pending.popleft()
    used = min(k, n_images - first)
    counts[first:first + used] += np.asarray(out)[:used]

  start_time, next_log, placed = time.time(), 0.1, (-1, None, None)
  for start in range(0, total, size):
    first = start // num
    if first != placed[0]:
      positions = np.minimum(np.arange(first, first + k), n_images - 1)
      placed = (first, *jax.device_put((images[positions], image_indices[positions])))
    out = _counts_core(apply_fn, variables, key, placed[1], placed[2], constants[0],
                       np.int32(start - first * num), constants[1],
                       np.int32(min(size, total - start)), constants[2],
                       batch_size=size, num_classes=int(num_classes), dtype=dtype)
    pending.append((first, out))
    if len(pending) > _MAX_IN_FLIGHT:
      collect()
    if log_name and start + size >= next_log * total:
      elapsed = time.time() - start_time
      logging.info("%s: %d / %d noisy forward passes (%.0f / s)", log_name,
                   min(start + size, total), total, min(start + size, total) / max(elapsed, 1e-9))
      next_log += 0.1
  while pending:
    collect()
  if np.any(counts.sum(axis=1) != num):
    raise ValueError(f"num_classes={num_classes} is smaller than the model's number of classes")
  return counts


def sample_counts(apply_fn: ApplyFn, variables, key, image, *, sigma: float, num: int,
                  batch_size: int = BATCH_SIZE, num_classes: int | None = None,
                  image_index: int = 0, stream: int = STREAM_SELECT,
                  dtype: str = "float32") -> np.ndarray:
  """Counts (num_classes,) int64 of f(image + N(0, sigma^2)) over `num` draws (the reference's
  `_sample_noise`); draw j uses `draw_key(key, image_index, stream, j)`."""
  return count_draws(apply_fn, variables, key, np.asarray(image)[None], [image_index],
                     sigma=sigma, num=num, batch_size=batch_size, num_classes=num_classes,
                     stream=stream, dtype=dtype)[0]


def certify(apply_fn: ApplyFn, variables, key, image, *, sigma: float, n0: int = N0, n: int = N,
            alpha: float = ALPHA, batch_size: int = BATCH_SIZE, num_classes: int | None = None,
            image_index: int = 0, dtype: str = "float32") -> tuple[int, float]:
  """CERTIFY (Cohen et al.) of one image: (class, L2 radius) or (ABSTAIN, 0.0). With
  probability >= 1 - alpha the class is g(x) and g is constant within the radius."""
  check_smoothing_options(sigma=sigma, n0=n0, n=n, alpha=alpha)
  common = dict(sigma=sigma, batch_size=batch_size, num_classes=num_classes,
                image_index=image_index, dtype=dtype)
  select = sample_counts(apply_fn, variables, key, image, num=n0, stream=STREAM_SELECT, **common)
  estimate = sample_counts(apply_fn, variables, key, image, num=n, stream=STREAM_ESTIMATE,
                           **common)
  result = certify_from_counts(select, estimate, sigma=sigma, alpha=alpha)
  return result["prediction"], result["radius"]


def predict(apply_fn: ApplyFn, variables, key, image, *, sigma: float, n: int = PREDICT_N,
            alpha: float = ALPHA, batch_size: int = BATCH_SIZE, num_classes: int | None = None,
            image_index: int = 0, dtype: str = "float32") -> int:
  """PREDICT (Cohen et al.) of one image: g(x) with probability >= 1 - alpha, or ABSTAIN."""
  check_smoothing_options(sigma=sigma, predict_n=n, alpha=alpha)
  counts = sample_counts(apply_fn, variables, key, image, sigma=sigma, num=n,
                         batch_size=batch_size, num_classes=num_classes,
                         image_index=image_index, stream=STREAM_PREDICT, dtype=dtype)
  return predict_from_counts(counts, alpha=alpha)["prediction"]


# ---------------------------------------------------------------------------------------------
# Data sets.

def _selection(num_test: int, num_examples: int, skip: int | None) -> tuple[np.ndarray, int]:
  check_smoothing_options(num_examples=num_examples)
  if num_examples > num_test:
    raise ValueError(f"--smoothing_num_examples must be <= the {num_test} test images, "
                     f"got {num_examples}")
  if num_examples == 0:
    num_examples, skip = num_test, 1 if skip is None else skip
  if skip is None:
    skip = max(1, num_test // num_examples)
  if not (_is_int(skip) and skip >= 1):
    raise ValueError(f"skip must be an integer >= 1, got {skip!r}")
  return np.arange(0, num_test, skip)[:num_examples], int(skip)


def select_indices(num_test: int, num_examples: int = NUM_EXAMPLES,
                   skip: int | None = None) -> np.ndarray:
  """Every `skip`-th test index from 0, at most `num_examples` of them (0: every image).
  skip defaults to num_test // num_examples: 0, 20, ..., 9980 for 500 of 10,000 images."""
  return _selection(num_test, num_examples, skip)[0]


def certified_accuracy_curve(per_example: Sequence[dict], radii: Sequence[float] = RADII) -> dict:
  """{str(radius): percent of examples correct with radius >= r} (the reference's analyze.py;
  abstentions are never correct)."""
  correct = np.array([bool(e["correct"]) for e in per_example])
  radius = np.array([float(e["radius"]) for e in per_example])
  return {str(float(r)): float(100.0 * np.mean(correct & (radius >= r))) for r in radii}


def _check_data(images, labels):
  if len(images) == 0 or len(images) != len(labels):
    raise ValueError(f"need as many labels as images (> 0), got {len(images)} images and "
                     f"{len(labels)} labels")


def _indices_rule(skip: int) -> str:
  return f"test indices 0, {skip}, {2 * skip}, ... (Cohen et al.'s --skip {skip})"


def certify_dataset(apply_fn: ApplyFn, variables, key, images, labels, *, sigma: float,
                    n0: int = N0, n: int = N, alpha: float = ALPHA,
                    batch_size: int = BATCH_SIZE, num_examples: int = NUM_EXAMPLES,
                    skip: int | None = None, dtype: str = "float32",
                    radii: Sequence[float] = RADII,
                    num_classes: int | None = None) -> tuple[dict, list[dict]]:
  """CERTIFY on every `skip`-th test image (`select_indices`). Image i (its test-set index)
  draws its noise from fold_in(key, i) (see `draw_key`).

  Returns (summary, per_example). summary (JSON-able; accuracies and rates in percent):
  {"method": "certify", "sigma", "n0", "n", "alpha", "batch_size", "dtype", "num_test",
  "num_examples", "skip", "indices", "radii", "certified_accuracy": {str(r): percent},
  "abstain_rate", "mean_radius_correct" (None if no example is certified correct),
  "average_certified_radius" (mean of radius * correct over all examples), "forward_passes",
  "seconds", "forward_passes_per_second"}. per_example: one dict per example, {"index",
  "label", "prediction" (ABSTAIN = -1), "radius", "correct", "count" (nA of n), "p_a_lower"}.
  """
  check_smoothing_options(sigma=sigma, n0=n0, n=n, alpha=alpha, num_examples=num_examples,
                          batch_size=batch_size, dtype=dtype)
  _check_data(images, labels)
  start_time = time.time()
  indices, skip = _selection(len(images), num_examples, skip)
  chosen = _unit_float(np.asarray(images)[indices])
  if num_classes is None:
    num_classes = infer_num_classes(apply_fn, variables, chosen.shape[1:])
  common = dict(sigma=sigma, batch_size=batch_size, num_classes=num_classes, dtype=dtype)
  select = count_draws(apply_fn, variables, key, chosen, indices, num=n0, stream=STREAM_SELECT,
                       log_name="smoothing selection", **common)
  estimate = count_draws(apply_fn, variables, key, chosen, indices, num=n,
                         stream=STREAM_ESTIMATE, log_name="smoothing estimation", **common)
  per_example = []
  for i, index in enumerate(indices):
    label = int(labels[index])
    result = certify_from_counts(select[i], estimate[i], sigma=sigma, alpha=alpha)
    per_example.append({"index": int(index), "label": label, **result,
                        "correct": result["prediction"] == label})
  seconds = time.time() - start_time
  correct_radii = [e["radius"] for e in per_example if e["correct"]]
  passes = len(indices) * (int(n0) + int(n))
  summary = {
      "method": "certify", "sigma": float(sigma), "n0": int(n0), "n": int(n),
      "alpha": float(alpha), "batch_size": int(batch_size), "dtype": dtype,
      "num_test": int(len(images)), "num_examples": int(len(indices)), "skip": skip,
      "indices": _indices_rule(skip), "radii": [float(r) for r in radii],
      "certified_accuracy": certified_accuracy_curve(per_example, radii),
      "abstain_rate": float(100.0 * np.mean([e["prediction"] == ABSTAIN for e in per_example])),
      "mean_radius_correct": float(np.mean(correct_radii)) if correct_radii else None,
      "average_certified_radius": float(np.sum(correct_radii) / len(per_example)),
      "forward_passes": passes, "seconds": seconds,
      "forward_passes_per_second": passes / max(seconds, 1e-9)}
  logging.info("CERTIFY sigma=%g n0=%d n=%d alpha=%g on %d images: certified accuracy %s, "
               "abstain %.1f%%, %.0f s", sigma, n0, n, alpha, len(indices),
               summary["certified_accuracy"], summary["abstain_rate"], seconds)
  return summary, per_example


def predict_dataset(apply_fn: ApplyFn, variables, key, images, labels, *, sigma: float,
                    n: int = PREDICT_N, alpha: float = ALPHA, batch_size: int = BATCH_SIZE,
                    num_examples: int = NUM_EXAMPLES, skip: int | None = None,
                    dtype: str = "float32",
                    num_classes: int | None = None) -> tuple[dict, list[dict]]:
  """PREDICT on every `skip`-th test image, noise stream 2 of fold_in(key, index).

  Returns (summary, per_example): summary {"method": "predict", "sigma", "n", "alpha",
  "batch_size", "dtype", "num_test", "num_examples", "skip", "indices", "accuracy" (correct,
  percent), "abstain_rate", "error_rate" (wrong and not abstained), "forward_passes",
  "seconds", "forward_passes_per_second"}; per_example {"index", "label", "prediction",
  "correct", "count", "count_second", "p_value"}."""
  check_smoothing_options(sigma=sigma, predict_n=n, alpha=alpha, num_examples=num_examples,
                          batch_size=batch_size, dtype=dtype)
  _check_data(images, labels)
  start_time = time.time()
  indices, skip = _selection(len(images), num_examples, skip)
  chosen = _unit_float(np.asarray(images)[indices])
  counts = count_draws(apply_fn, variables, key, chosen, indices, sigma=sigma, num=n,
                       batch_size=batch_size, num_classes=num_classes, stream=STREAM_PREDICT,
                       dtype=dtype, log_name="smoothing predict")
  per_example = []
  for i, index in enumerate(indices):
    label = int(labels[index])
    result = predict_from_counts(counts[i], alpha=alpha)
    per_example.append({"index": int(index), "label": label, **result,
                        "correct": result["prediction"] == label})
  seconds = time.time() - start_time
  abstain = np.array([e["prediction"] == ABSTAIN for e in per_example])
  correct = np.array([e["correct"] for e in per_example])
  passes = len(indices) * int(n)
  return {
      "method": "predict", "sigma": float(sigma), "n": int(n), "alpha": float(alpha),
      "batch_size": int(batch_size), "dtype": dtype, "num_test": int(len(images)),
      "num_examples": int(len(indices)), "skip": skip,
      "indices": _indices_rule(skip), "accuracy": float(100.0 * correct.mean()),
      "abstain_rate": float(100.0 * abstain.mean()),
      "error_rate": float(100.0 * (~correct & ~abstain).mean()), "forward_passes": passes,
      "seconds": seconds, "forward_passes_per_second": passes / max(seconds, 1e-9)}, per_example


def write_per_example(path, per_example: Sequence[dict]) -> None:
  """Tab-separated side file in the reference's column order (idx, label, predict, radius,
  correct), then this module's extra columns."""
  if not per_example:
    raise ValueError("no examples to write")
  names = {"index": "idx", "prediction": "predict"}
  first = ["index", "label", "prediction", "radius", "correct"]
  columns = [c for c in first if c in per_example[0]]
  columns += [c for c in per_example[0] if c not in columns]

  def cell(value):
    if isinstance(value, (bool, np.bool_)):
      return str(int(value))
    if isinstance(value, float):
      return repr(value)
    return str(value)

  with open(path, "w") as f:
    f.write("\t".join(names.get(c, c) for c in columns) + "\n")
    for e in per_example:
      f.write("\t".join(cell(e[c]) for c in columns) + "\n")


@functools.lru_cache(maxsize=None)
def smoothing_apply_fn(model, dtype: str = "float32") -> ApplyFn:
  """`eval_apply_fn` of `model` computing in `dtype` (a clone with the module's compute dtype
  set; the parameters keep their dtype). Memoised, so compilations are shared."""
  check_smoothing_options(dtype=dtype)
  if not hasattr(model, "dtype") or jnp.dtype(model.dtype) == jnp.dtype(dtype):
    return eval_apply_fn(model)
  return eval_apply_fn(model.clone(dtype=jnp.dtype(dtype)))
