"""CERTIFY and PREDICT over a test set: every `skip`-th test image from index 0 (Cohen et al.
certify CIFAR-10 with --skip 20), the certified-accuracy curve, and the suite's section."""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from absl import logging

from nkd.config.evaluation import (
    SMOOTHING_ALPHA as ALPHA,
    SMOOTHING_BATCH_SIZE as BATCH_SIZE,
    SMOOTHING_N as N,
    SMOOTHING_N0 as N0,
    SMOOTHING_NUM_EXAMPLES as NUM_EXAMPLES,
    check_smoothing,
    is_int,
)
from nkd.data.augment import to_unit_float
from nkd.evaluation.evaluator import EvalData, Model
from nkd.evaluation.predict import ApplyFn
from nkd.evaluation.smoothing.per_image import (
    ABSTAIN,
    PREDICT_N,
    certify_from_counts,
    predict_from_counts,
)
from nkd.evaluation.smoothing.sampling import (
    STREAM_ESTIMATE,
    STREAM_PREDICT,
    STREAM_SELECT,
    count_draws,
    infer_num_classes,
)
from nkd.evaluation.smoothing.side_file import write_per_example

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)  # certified accuracy is reported at these L2 radii


def _selection(num_test: int, num_examples: int, skip: int | None) -> tuple[np.ndarray, int]:
  check_smoothing(num_examples=num_examples, available=num_test)
  if num_examples == 0:
    num_examples, skip = num_test, 1 if skip is None else skip
  if skip is None:
    skip = max(1, num_test // num_examples)
  if not (is_int(skip) and skip >= 1):
    raise ValueError(f"skip must be an integer >= 1, got {skip!r}")
  return np.arange(0, num_test, skip)[:num_examples], int(skip)


def select_indices(
    num_test: int, num_examples: int = NUM_EXAMPLES, skip: int | None = None
) -> np.ndarray:
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
    raise ValueError(
        f"need as many labels as images (> 0), got {len(images)} images and "
        f"{len(labels)} labels"
    )


def _indices_rule(skip: int) -> str:
  return f"test indices 0, {skip}, {2 * skip}, ... (Cohen et al.'s --skip {skip})"


def certify_dataset(
    apply_fn: ApplyFn,
    variables,
    key,
    images,
    labels,
    *,
    sigma: float,
    n0: int = N0,
    n: int = N,
    alpha: float = ALPHA,
    batch_size: int = BATCH_SIZE,
    num_examples: int = NUM_EXAMPLES,
    skip: int | None = None,
    dtype: str = "float32",
    radii: Sequence[float] = RADII,
    num_classes: int | None = None,
) -> tuple[dict, list[dict]]:
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
  check_smoothing(
      sigma=sigma,
      n0=n0,
      n=n,
      alpha=alpha,
      num_examples=num_examples,
      batch_size=batch_size,
      dtype=dtype,
  )
  _check_data(images, labels)
  start_time = time.time()
  indices, skip = _selection(len(images), num_examples, skip)
  chosen = to_unit_float(np.asarray(images)[indices])
  if num_classes is None:
    num_classes = infer_num_classes(apply_fn, variables, chosen.shape[1:])
  common = dict(sigma=sigma, batch_size=batch_size, num_classes=num_classes, dtype=dtype)
  select = count_draws(
      apply_fn,
      variables,
      key,
      chosen,
      indices,
      num=n0,
      stream=STREAM_SELECT,
      log_name="smoothing selection",
      **common,
  )
  estimate = count_draws(
      apply_fn,
      variables,
      key,
      chosen,
      indices,
      num=n,
      stream=STREAM_ESTIMATE,
      log_name="smoothing estimation",
      **common,
  )
  per_example = []
  for i, index in enumerate(indices):
    label = int(labels[index])
    result = certify_from_counts(select[i], estimate[i], sigma=sigma, alpha=alpha)
    per_example.append(
        {"index": int(index), "label": label, **result, "correct": result["prediction"] == label}
    )
  seconds = time.time() - start_time
  correct_radii = [e["radius"] for e in per_example if e["correct"]]
  passes = len(indices) * (int(n0) + int(n))
  summary = {
      "method": "certify",
      "sigma": float(sigma),
      "n0": int(n0),
      "n": int(n),
      "alpha": float(alpha),
      "batch_size": int(batch_size),
      "dtype": dtype,
      "num_test": int(len(images)),
      "num_examples": int(len(indices)),
      "skip": skip,
      "indices": _indices_rule(skip),
      "radii": [float(r) for r in radii],
      "certified_accuracy": certified_accuracy_curve(per_example, radii),
      "abstain_rate": float(100.0 * np.mean([e["prediction"] == ABSTAIN for e in per_example])),
      "mean_radius_correct": float(np.mean(correct_radii)) if correct_radii else None,
      "average_certified_radius": float(np.sum(correct_radii) / len(per_example)),
      "forward_passes": passes,
      "seconds": seconds,
      "forward_passes_per_second": passes / max(seconds, 1e-9),
  }
  logging.info(
      "CERTIFY sigma=%g n0=%d n=%d alpha=%g on %d images: certified accuracy %s, "
      "abstain %.1f%%, %.0f s",
      sigma,
      n0,
      n,
      alpha,
      len(indices),
      summary["certified_accuracy"],
      summary["abstain_rate"],
      seconds,
  )
  return summary, per_example


def predict_dataset(
    apply_fn: ApplyFn,
    variables,
    key,
    images,
    labels,
    *,
    sigma: float,
    n: int = PREDICT_N,
    alpha: float = ALPHA,
    batch_size: int = BATCH_SIZE,
    num_examples: int = NUM_EXAMPLES,
    skip: int | None = None,
    dtype: str = "float32",
    num_classes: int | None = None,
) -> tuple[dict, list[dict]]:
  """PREDICT on every `skip`-th test image, noise stream 2 of fold_in(key, index).

  Returns (summary, per_example): summary {"method": "predict", "sigma", "n", "alpha",
  "batch_size", "dtype", "num_test", "num_examples", "skip", "indices", "accuracy" (correct,
  percent), "abstain_rate", "error_rate" (wrong and not abstained), "forward_passes",
  "seconds", "forward_passes_per_second"}; per_example {"index", "label", "prediction",
  "correct", "count", "count_second", "p_value"}."""
  check_smoothing(
      sigma=sigma,
      predict_n=n,
      alpha=alpha,
      num_examples=num_examples,
      batch_size=batch_size,
      dtype=dtype,
  )
  _check_data(images, labels)
  start_time = time.time()
  indices, skip = _selection(len(images), num_examples, skip)
  chosen = to_unit_float(np.asarray(images)[indices])
  counts = count_draws(
      apply_fn,
      variables,
      key,
      chosen,
      indices,
      sigma=sigma,
      num=n,
      batch_size=batch_size,
      num_classes=num_classes,
      stream=STREAM_PREDICT,
      dtype=dtype,
      log_name="smoothing predict",
  )
  per_example = []
  for i, index in enumerate(indices):
    label = int(labels[index])
    result = predict_from_counts(counts[i], alpha=alpha)
    per_example.append(
        {"index": int(index), "label": label, **result, "correct": result["prediction"] == label}
    )
  seconds = time.time() - start_time
  abstain = np.array([e["prediction"] == ABSTAIN for e in per_example])
  correct = np.array([e["correct"] for e in per_example])
  passes = len(indices) * int(n)
  return {
      "method": "predict",
      "sigma": float(sigma),
      "n": int(n),
      "alpha": float(alpha),
      "batch_size": int(batch_size),
      "dtype": dtype,
      "num_test": int(len(images)),
      "num_examples": int(len(indices)),
      "skip": skip,
      "indices": _indices_rule(skip),
      "accuracy": float(100.0 * correct.mean()),
      "abstain_rate": float(100.0 * abstain.mean()),
      "error_rate": float(100.0 * (~correct & ~abstain).mean()),
      "forward_passes": passes,
      "seconds": seconds,
      "forward_passes_per_second": passes / max(seconds, 1e-9),
  }, per_example


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "smoothing" section: CERTIFY at --smoothing_sigma (else the run's
  --input_noise_sigma), sampling with model.smoothing_apply_fn; the per-example table in
  OUTPUT_DIR/smoothing_sigma<s>.tsv."""
  sigma = options.resolved_smoothing_sigma(model.input_noise_sigma)
  summary, per_example = certify_dataset(
      model.smoothing_apply_fn or model.apply_fn,
      model.variables,
      data.key_of("smoothing"),
      data.images,
      data.labels,
      sigma=sigma,
      n0=options.smoothing_n0,
      n=options.smoothing_n,
      alpha=options.smoothing_alpha,
      batch_size=options.smoothing_batch_size,
      num_examples=options.smoothing_num_examples,
      dtype=options.smoothing_dtype,
  )
  if data.output_dir:
    path = os.path.join(data.output_dir, f"smoothing_sigma{sigma:g}.tsv")
    write_per_example(path, per_example)
    summary["per_example_file"] = os.path.basename(path)
  logging.info(
      "Smoothing sigma %g: certified accuracy %s, abstain %.2f%%",
      sigma,
      summary["certified_accuracy"],
      summary["abstain_rate"],
  )
  return summary
