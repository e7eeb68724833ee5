"""CERTIFY and PREDICT of one image (Cohen et al.'s Algorithm), and their decisions from counts.

CERTIFY: n0 draws pick the top class cA, n fresh draws give nA; return (cA, sigma *
Phi^-1(pA_lower)) with pA_lower the one-sided (1 - alpha) Clopper-Pearson bound, or abstain.
PREDICT: abstain unless the top two counts pass a two-sided binomial test at level alpha.
"""

from __future__ import annotations

import numpy as np

from nkd.config.evaluation import (
    SMOOTHING_ALPHA as ALPHA,
    SMOOTHING_BATCH_SIZE as BATCH_SIZE,
    SMOOTHING_N as N,
    SMOOTHING_N0 as N0,
    check_smoothing,
)
from nkd.evaluation.predict import ApplyFn
from nkd.evaluation.smoothing.sampling import (
    STREAM_ESTIMATE,
    STREAM_PREDICT,
    STREAM_SELECT,
    sample_counts,
)
from nkd.evaluation.smoothing.statistics import (
    binomial_test,
    certified_radius,
    clopper_pearson_lower,
)

ABSTAIN = -1
PREDICT_N = 100  # PREDICT's draws (the reference's default)


def certify_from_counts(
    counts_select, counts_estimate, *, sigma: float, alpha: float = ALPHA
) -> dict:
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
  return {
      "prediction": c_a,
      "radius": certified_radius(p_a_lower, sigma),
      "count": n_a,
      "p_a_lower": p_a_lower,
  }


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


def certify(
    apply_fn: ApplyFn,
    variables,
    key,
    image,
    *,
    sigma: float,
    n0: int = N0,
    n: int = N,
    alpha: float = ALPHA,
    batch_size: int = BATCH_SIZE,
    num_classes: int | None = None,
    image_index: int = 0,
    dtype: str = "float32",
) -> tuple[int, float]:
  """CERTIFY (Cohen et al.) of one image: (class, L2 radius) or (ABSTAIN, 0.0). With
  probability >= 1 - alpha the class is g(x) and g is constant within the radius."""
  check_smoothing(sigma=sigma, n0=n0, n=n, alpha=alpha)
  common = dict(
      sigma=sigma,
      batch_size=batch_size,
      num_classes=num_classes,
      image_index=image_index,
      dtype=dtype,
  )
  select = sample_counts(apply_fn, variables, key, image, num=n0, stream=STREAM_SELECT, **common)
  estimate = sample_counts(apply_fn, variables, key, image, num=n, stream=STREAM_ESTIMATE, **common)
  result = certify_from_counts(select, estimate, sigma=sigma, alpha=alpha)
  return result["prediction"], result["radius"]


def predict(
    apply_fn: ApplyFn,
    variables,
    key,
    image,
    *,
    sigma: float,
    n: int = PREDICT_N,
    alpha: float = ALPHA,
    batch_size: int = BATCH_SIZE,
    num_classes: int | None = None,
    image_index: int = 0,
    dtype: str = "float32",
) -> int:
  """PREDICT (Cohen et al.) of one image: g(x) with probability >= 1 - alpha, or ABSTAIN."""
  check_smoothing(sigma=sigma, predict_n=n, alpha=alpha)
  counts = sample_counts(
      apply_fn,
      variables,
      key,
      image,
      sigma=sigma,
      num=n,
      batch_size=batch_size,
      num_classes=num_classes,
      image_index=image_index,
      stream=STREAM_PREDICT,
      dtype=dtype,
  )
  return predict_from_counts(counts, alpha=alpha)["prediction"]
