"""The Python surface for notebooks: load a finished run by its folder, look at it, train one.

  from nkd import api
  run = api.load_run("workspace/runs/demo/seed_0")
  run.config.model, run.results.test_accuracy, run.metrics[-1]  # options, results.json, epochs
  data = run.dataset()                          # the data it was trained on (nkd.data.Dataset)
  run.logits(data.test_images)                  # (N, classes) float32; images uint8 NHWC or
  run.predict(data.test_images)                 # float in [0, 1]
  run.accuracy(data.test_images, data.test_labels)
  run.evaluate("pgd", data.test_images[:500], data.test_labels[:500], pgd_eps=(0.01, 0.031))
  teacher = run.teacher()                       # a distilled student's teacher, also a Run
  api.train(config)                             # nkd.config.Config, or api.config(...)

`evaluate` runs one evaluator of the suite (accuracy, calibration, pgd, cifar10c, cinic,
smoothing) with the run's evaluation options, overridden by keyword (the names of nkd.main's
flags), and the run's evaluation key, so its numbers are those `nkd.evaluate` would give; it
returns that evaluator's results.json section. A library layer above the pipeline: it sets JAX
up as a run does (pipeline.setup_jax) and writes nothing into the run's folder.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from nkd import config as config_lib
from nkd import keys as keys_lib
from nkd import pipeline
from nkd import run_files
from nkd.config import fields as fields_lib
from nkd.data import Dataset, load_dataset
from nkd.errors import DataError
from nkd.evaluation import predict, smoothing
from nkd.evaluation.suite import run_suite
from nkd.models import create_model
from nkd.training.checkpoint import Checkpointer

# evaluate(name) -> the results.json section it fills.
SECTION_OF = {
    "accuracy": "clean",
    "calibration": "calibration",
    "pgd": "pgd",
    "cifar10c": "cifar10_c",
    "cinic": "cinic_imagenet",
    "smoothing": "smoothing",
}


@dataclasses.dataclass
class Run:
  """A finished run: its options, model, final variables and results."""

  workdir: str
  config: config_lib.Config
  model: Any
  variables: dict[str, Any]  # {'params', 'batch_stats'}
  results: run_files.RunResults

  @property
  def apply_fn(self):
    """`apply_fn(variables, images) -> logits` in eval mode, images float in [0, 1] (the
    evaluators' interface, nkd/evaluation/predict.py)."""
    return predict.eval_apply_fn(self.model)

  @property
  def num_classes(self) -> int:
    return int(self.variables["params"]["fc"]["bias"].shape[0])

  @property
  def metrics(self) -> list[dict[str, Any]]:
    """metrics.jsonl: one record per trained epoch (loss, accuracies, lr, img/s)."""
    return run_files.read_metrics(self.workdir)

  def dataset(self) -> Dataset:
    """The data set the run was trained and tested on (its --dataset and data options)."""
    return load_dataset(self.config)

  def logits(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Eval-mode logits (N, classes) for uint8 NHWC images, or float ones in [0, 1]."""
    return predict.compute_logits(self.apply_fn, self.variables, np.asarray(images), batch_size)

  def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes (N,)."""
    return np.argmax(self.logits(images, batch_size), axis=-1)

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return predict.accuracy(self.logits(images), labels)

  def evaluate(self, name: str, images: np.ndarray, labels: np.ndarray, **options) -> dict:
    """One evaluator on (images uint8 NHWC, labels): its results.json section. `options`
    override the run's evaluation options, e.g. pgd_eps=(0.031,), pgd_steps=(10,),
    pgd_restarts=1, smoothing_n=1000."""
    if name not in SECTION_OF:
      raise ValueError(f"unknown evaluator {name!r}; expected one of {', '.join(SECTION_OF)}")
    eval_fields = {f.name for f in dataclasses.fields(config_lib.EvalOptions)}
    unknown = sorted(set(options) - eval_fields)
    if unknown:
      raise TypeError(
          f"evaluate({name!r}): {', '.join(unknown)} not an evaluation option "
          f"(those of nkd.evaluate --help)"
      )
    fields = config_lib.Config.fields_by_name()
    config = self.config.replace(
        eval_suite=name, **{k: fields_lib.from_value(fields[k], v) for k, v in options.items()}
    )
    config_lib.validate(config)
    sections = run_suite(
        self.apply_fn,
        self.variables,
        key=keys_lib.run_keys(config.seed)["eval"],
        test_images=np.asarray(images),
        test_labels=np.asarray(labels),
        options=config,
        cache_dir=config.eval_cache_dir or None,
        input_noise_sigma=config.input_noise_sigma,
        smoothing_apply_fn=smoothing.smoothing_apply_fn(self.model, config.smoothing_dtype),
    )
    return sections[SECTION_OF[name]]

  def teacher(self) -> "Run | None":
    """The run this student was distilled from (None for a run trained alone)."""
    teacher = self.results.teacher
    return load_run(teacher.workdir) if teacher else None


def load_run(workdir: str) -> Run:
  """The finished run in `workdir` (config.json, results.json and its final checkpoint)."""
  if not os.path.isdir(workdir):
    raise DataError(f"{workdir}: no such folder (expected a finished run's folder)")
  missing = [
      name
      for name in (run_files.CONFIG, run_files.RESULTS, "checkpoints/")
      if not os.path.exists(os.path.join(workdir, name))
  ]
  if missing:
    started = run_files.CONFIG not in missing
    raise DataError(
        f"{workdir} holds no finished run: {', '.join(missing)} missing"
        + (
            " (a run started there has not finished: run its command again to resume)"
            if started
            else ""
        )
    )
  checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"))
  if checkpoints.latest_step() is None:
    checkpoints.close()
    raise DataError(f"{workdir} holds no finished run: checkpoints/ holds no checkpoint")
  try:
    variables = checkpoints.restore_variables()  # the final checkpoint, or a one-line error
  finally:
    checkpoints.close()
  stored = run_files.read_json(os.path.join(workdir, run_files.CONFIG))
  config = config_lib.resolve(
      config_lib.Config.from_options(stored["options"], workdir=workdir, distributed=False)
  )
  pipeline.setup_jax(config)  # the run's numerics (PRNG implementation, deterministic GPU ops)
  model = create_model(
      config.model,
      num_classes=int(variables["params"]["fc"]["bias"].shape[0]),
      dropout_rate=config.dropout,
      dtype=config.dtype,
  )
  return Run(
      workdir=workdir,
      config=config,
      model=model,
      variables=variables,
      results=run_files.read_results(workdir),
  )


def config(flagfile: str | None = None, flags: Sequence[str] = (), **options) -> config_lib.Config:
  """A resolved Config: from a flagfile and flags as nkd.main reads them, or from options by
  name (`config(dataset="synthetic", model="wrn-10-1", epochs=3)`)."""
  if flagfile:
    extra = [*flags, *config_lib.Config(**options).to_flags(list(options))]
    return config_lib.parse_flagfile(flagfile, extra)
  if flags:
    raise ValueError("flags= needs a flagfile; give options by name instead")
  return config_lib.resolve(config_lib.Config(**options))


def train(run_config: config_lib.Config) -> Run:
  """Trains (or finds finished) the run of `run_config` as nkd.main does, its teacher first if
  it needs one, and evaluates it with its --eval_suite (writing results.json); the loaded run.
  Prints nothing: `nkd.cli.results_table` formats what nkd.main prints."""
  run_config = config_lib.resolve(run_config)
  pipeline.run(run_config)
  return load_run(run_config.workdir)
