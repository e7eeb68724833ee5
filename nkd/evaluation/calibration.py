"""Calibration (ECE, NLL) and, for distilled students, fidelity to the teacher.

ECE uses 15 equal-width bins on the max-softmax confidence, bin i holding confidences in
(i/15, (i+1)/15]: ECE = sum_i |B_i|/N * |accuracy(B_i) - confidence(B_i)|. The functions return
fractions (ECE in [0, 1]); the result dicts report ECE, accuracy and agreement in percent and
NLL and KL in nats per example. Computed on host in float64 from the logits.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from nkd.evaluation import predict
from nkd.evaluation.evaluator import EvalData, Model

NUM_BINS = 15


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _check(logits: np.ndarray, labels: np.ndarray | None = None) -> None:
  if np.ndim(logits) != 2 or len(logits) == 0:
    raise ValueError(f"logits must be (N, C) with N > 0, got shape {np.shape(logits)}")
  if labels is not None and np.shape(labels) != (len(logits),):
    raise ValueError(f"labels must be ({len(logits)},), got shape {np.shape(labels)}")


def expected_calibration_error(
    logits: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS
) -> float:
  """ECE as a fraction in [0, 1] (equal-width bins on max-softmax confidence)."""
  _check(logits, labels)
  if int(num_bins) < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  probs = np.exp(_log_softmax(logits))
  confidence = probs.max(axis=-1)
  correct = probs.argmax(axis=-1) == np.asarray(labels)
  bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins)
  conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
  acc_sum = np.bincount(bins, weights=correct.astype(np.float64), minlength=num_bins)
  return float(np.sum(np.abs(acc_sum - conf_sum)) / len(confidence))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(label) in nats."""
  _check(logits, labels)
  log_probs = _log_softmax(logits)
  return float(-np.mean(np.take_along_axis(log_probs, np.asarray(labels)[:, None], -1)))


def top1_agreement(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
  """Fraction of examples where student and teacher predict the same class."""
  _check(student_logits)
  if np.shape(student_logits) != np.shape(teacher_logits):
    raise ValueError(
        f"student and teacher logits differ in shape: {np.shape(student_logits)} "
        f"vs {np.shape(teacher_logits)}"
    )
  return float(np.mean(np.argmax(student_logits, -1) == np.argmax(teacher_logits, -1)))


def mean_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
  """Mean over examples of KL(softmax(teacher) || softmax(student)), nats, temperature 1."""
  _check(teacher_logits)
  if np.shape(student_logits) != np.shape(teacher_logits):
    raise ValueError(
        f"student and teacher logits differ in shape: {np.shape(student_logits)} "
        f"vs {np.shape(teacher_logits)}"
    )
  log_t, log_s = _log_softmax(teacher_logits), _log_softmax(student_logits)
  return float(np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)))


def evaluate_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    num_bins: int = NUM_BINS,
    teacher_logits: np.ndarray | None = None,
) -> dict:
  """{"accuracy" %, "ece" %, "ece_num_bins", "nll" nats, "num_examples"} and, with teacher
  logits, "teacher_agreement" % and "kl_teacher_student" nats."""
  out = {
      "num_examples": int(len(logits)),
      "accuracy": 100.0 * float(np.mean(np.argmax(logits, -1) == np.asarray(labels))),
      "ece": 100.0 * expected_calibration_error(logits, labels, num_bins),
      "ece_num_bins": int(num_bins),
      "ece_units": "percent",
      "nll": negative_log_likelihood(logits, labels),
  }
  if teacher_logits is not None:
    out["teacher_agreement"] = 100.0 * top1_agreement(logits, teacher_logits)
    out["kl_teacher_student"] = mean_kl(teacher_logits, logits)
  return out


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "calibration" section, with --ece_bins bins; agreement and KL with the
  teacher when the model has one."""
  teacher_logits = None
  if model.teacher is not None:
    teacher_logits = predict.compute_logits(*model.teacher, data.images, options.eval_batch_size)
  section = evaluate_calibration(
      data.clean_logits(model, options.eval_batch_size),
      data.labels,
      num_bins=options.ece_bins,
      teacher_logits=teacher_logits,
  )
  logging.info("Calibration: %s", section)
  return section
