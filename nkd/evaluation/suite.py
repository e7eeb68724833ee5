"""The evaluation suite: the evaluators --eval_suite names, run in `EVALUATORS` order, each
section timed here ("time_s"), into one dict of results.json sections.

A new evaluator: its module with `run(model, data, options) -> section` (evaluator.py), its
options in nkd/config/evaluation.py (a SUITE_ITEMS name), one line below, its section name in
nkd/run_files.py.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from nkd.config.evaluation import EvalOptions
from nkd.evaluation import accuracy, autoattack, calibration, cifar10c, cinic, pgd, smoothing
from nkd.evaluation.evaluator import EvalData, Evaluator, Model
from nkd.evaluation.predict import ApplyFn, RandomApplyFn


@dataclasses.dataclass(frozen=True)
class Entry:
  section: str  # its key in results.json
  run: Evaluator
  timed: bool = True  # False: the section keeps its own "seconds" instead of "time_s"


# --eval_suite name -> evaluator, in the order they run (later ones read earlier sections).
EVALUATORS = {
    "accuracy": Entry("clean", accuracy.run),
    "calibration": Entry("calibration", calibration.run),
    "pgd": Entry("pgd", pgd.run),
    "cifar10c": Entry("cifar10_c", cifar10c.run),
    "cinic": Entry("cinic_imagenet", cinic.run),
    "autoattack": Entry("autoattack", autoattack.run, timed=False),  # reads "pgd"
    "smoothing": Entry("smoothing", smoothing.run, timed=False),
}


def run_evaluators(model: Model, data: EvalData, options: EvalOptions) -> dict:
  """The sections of `options.suite`, by results.json name."""
  for name, entry in EVALUATORS.items():
    if name in options.suite:
      start = time.time()
      section = entry.run(model, data, options)
      if entry.timed:
        section["time_s"] = time.time() - start
      data.sections[entry.section] = section
  return dict(data.sections)


def run_suite(
    apply_fn: ApplyFn,
    variables,
    *,
    key: jax.Array,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    options: EvalOptions,
    cache_dir: str | None = None,
    teacher: tuple[ApplyFn, object] | None = None,
    test_logits: np.ndarray | None = None,
    input_noise_sigma: float = 0.0,
    output_dir: str | None = None,
    smoothing_apply_fn: ApplyFn | None = None,
    random_apply_fn: RandomApplyFn | None = None,
) -> dict:
  """Validates `options` (EvalOptions or a Config) and evaluates `apply_fn(variables, images)`
  on the clean test set (uint8 NHWC) with every evaluator the suite names.

  The keyword arguments fill `Model` (teacher, smoothing_apply_fn, random_apply_fn,
  input_noise_sigma) and `EvalData` (key, cache_dir, else --eval_cache_dir; output_dir, for
  side files; test_logits, the trainer's last evaluation, not computed again).
  """
  options.validate()
  test_images, test_labels = np.asarray(test_images), np.asarray(test_labels).astype(np.int32)
  if (
      test_images.dtype != np.uint8
      or test_images.ndim != 4
      or len(test_images) != len(test_labels)
      or len(test_images) == 0
  ):
    raise ValueError(
        f"test_images must be uint8 NHWC with one label each, got "
        f"{test_images.dtype} {test_images.shape} and {len(test_labels)} labels"
    )
  model = Model(
      apply_fn,
      variables,
      teacher=teacher,
      smoothing_apply_fn=smoothing_apply_fn,
      random_apply_fn=random_apply_fn,
      input_noise_sigma=input_noise_sigma,
  )
  data = EvalData(
      test_images,
      test_labels,
      key,
      cache_dir=cache_dir or options.eval_cache_dir or None,
      output_dir=output_dir,
      logits=test_logits,
  )
  return run_evaluators(model, data, options)
