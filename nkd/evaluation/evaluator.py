"""The one signature of an evaluator: `run(model: Model, data: EvalData, options) -> section`.

`options` is the EvalOptions (or a Config); the section is JSON-able (accuracies in percent)
and becomes results.json's entry. The suite (suite.py) runs the registered evaluators in order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from nkd import keys as keys_lib
from nkd.evaluation import predict
from nkd.evaluation.predict import ApplyFn, RandomApplyFn

# fold_in tags of the evaluation key (PGD's key is fold_in(key, --pgd_seed)).
KEY_TAGS = {"smoothing": 1_000_001, "autoattack": 1_000_002}


@dataclasses.dataclass(frozen=True)
class Model:
  """The model evaluated, `apply_fn(variables, images)` (eval mode, [0, 1] NHWC -> logits),
  and what some evaluators use beside it."""

  apply_fn: ApplyFn
  variables: Any
  teacher: tuple[ApplyFn, Any] | None = None  # (apply_fn, variables): agreement with it
  smoothing_apply_fn: ApplyFn | None = None  # smoothing's sampling copy; default apply_fn
  random_apply_fn: RandomApplyFn | None = None  # the model random at test time (AutoAttack)
  input_noise_sigma: float = 0.0  # the run's training noise: smoothing's default sigma


@dataclasses.dataclass
class EvalData:
  """The test set (uint8 NHWC images, int32 labels), the evaluation key, the folders for caches
  and side files, and what earlier evaluators of the suite computed."""

  images: np.ndarray
  labels: np.ndarray
  key: jax.Array
  cache_dir: str | None = None
  output_dir: str | None = None
  logits: np.ndarray | None = None  # the model's clean logits, computed once
  sections: dict[str, dict] = dataclasses.field(default_factory=dict)  # by results.json name

  def key_of(self, name: str) -> jax.Array:
    return keys_lib.fold_in(self.key, KEY_TAGS[name])

  def clean_logits(self, model: Model, batch_size: int) -> np.ndarray:
    if self.logits is None:
      self.logits = predict.compute_logits(model.apply_fn, model.variables, self.images, batch_size)
    return self.logits

  def clean_accuracy(self, model: Model, batch_size: int) -> float:
    return 100.0 * float(
        np.mean(np.argmax(self.clean_logits(model, batch_size), -1) == self.labels)
    )


Evaluator = Callable[[Model, EvalData, Any], dict]
