"""Evaluate a saved run: `python -m nkd.evaluate --workdir=RUN [--eval_suite=...] [--pgd_...]`.

Loads the run's options from RUN/config.json, its final checkpoint and (for a distilled student)
its teacher, runs the evaluation suite (nkd/evaluation) and merges the results into
RUN/results.json under `clean`, `calibration`, `pgd`, `cifar10_c` and `cinic_imagenet`.
Training runs call the same `evaluate_variables` at their end with their configured suite.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
from absl import app, flags, logging

from nkd import config as config_lib
from nkd import results as run_files
from nkd.errors import ConfigError, DataError, NkdError
from nkd.evaluation import EvalOptions, run_suite
from nkd.evaluation.cifar10c import DataUnavailableError
from nkd.training import keys as keys_lib


def evaluate_variables(config, model, variables, data, teacher=None) -> dict[str, Any]:
  """Runs `config.eval_suite` on the eval-mode model; teacher agreement for students."""
  def apply_fn(images):
    return model.apply(variables, images, train=False, deterministic=True)

  teacher_apply_fn = None
  if teacher is not None:
    def teacher_apply_fn(images):
      return teacher.model.apply(teacher.variables, images, train=False, deterministic=True)
  cache_dir = config.eval_cache_dir or os.path.join(config.workspace, "cache", "eval")
  try:
    return run_suite(apply_fn, key=keys_lib.run_keys(config.seed)["eval"],
                     test_images=data.test_images, test_labels=data.test_labels,
                     options=config, cache_dir=cache_dir, teacher_apply_fn=teacher_apply_fn)
  except (ValueError, DataUnavailableError) as e:  # The evaluators' errors name their input.
    raise DataError(str(e).splitlines()[0]) from None


def _stored_config(workdir: str, overrides: dict[str, Any]):
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path) or not os.path.exists(os.path.join(workdir, run_files.RESULTS)):
    raise NkdError(f"--workdir={workdir} holds no finished run (expected {run_files.CONFIG} and "
                   f"{run_files.RESULTS})")
  stored = run_files.read_json(path)
  fields = {f.name: f for f in dataclasses.fields(config_lib.Config)}
  values = {k: tuple(v) if isinstance(fields[k].default, tuple) else v
            for k, v in stored["options"].items() if k in fields}
  return config_lib.resolve(config_lib.Config(**{**values, **overrides, "workdir": workdir})), \
      stored


def evaluate_run(workdir: str, eval_overrides: dict[str, Any]) -> dict[str, Any]:
  """Evaluates the finished run in `workdir` and merges the results into its results.json."""
  from nkd import pipeline  # pylint: disable=g-import-not-at-top
  from nkd.data import load_dataset  # pylint: disable=g-import-not-at-top
  from nkd.models import create_model  # pylint: disable=g-import-not-at-top
  from nkd.training.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

  config, stored = _stored_config(workdir, eval_overrides)
  pipeline.setup_jax(config)
  data = load_dataset(config)
  if stored.get("data_fingerprint") not in (None, data.fingerprint()):
    raise DataError(f"the data set found for --workdir={workdir} differs from the one it was "
                    f"trained on (data_fingerprint); check --data_dir")
  model = create_model(config.model, num_classes=data.num_classes, dtype=config.dtype,
                       dropout_rate=config.dropout)
  variables = Checkpointer(os.path.join(workdir, "checkpoints")).restore_variables()
  teacher = None
  teacher_dir = (stored.get("teacher") or {}).get("workdir")
  if teacher_dir:
    teacher = pipeline.load_teacher(teacher_dir, num_classes=data.num_classes, dtype=config.dtype)
  evaluation = evaluate_variables(config, model, variables, data, teacher)
  results_path = os.path.join(workdir, run_files.RESULTS)
  results = {**run_files.read_json(results_path), **evaluation}
  run_files.write_json(results_path, results)
  return results


def summary_lines(results: dict[str, Any]) -> list[str]:
  """A few human-readable lines of an evaluation."""
  lines = []
  if "clean" in results:
    lines.append(f"clean accuracy      {results['clean']['accuracy']:.2f}%")
  if "calibration" in results:
    cal = results["calibration"]
    lines.append(f"ECE / NLL           {cal['ece']:.2f}% / {cal['nll']:.4f}" +
                 (f"   teacher agreement {cal['teacher_agreement']:.2f}%"
                  if cal.get("teacher_agreement") is not None else ""))
  for r in results.get("pgd", {}).get("results", []):
    lines.append(f"PGD-{r['steps']:<3} eps {r['eps']:.4f}  robust {r['robust_accuracy']:.2f}% "
                 f"(worst restart {r['worst_restart_accuracy']:.2f}%, {r['restarts']} restarts)")
  if "cifar10_c" in results:
    c = results["cifar10_c"]
    mean = c.get("mean_15")
    lines.append(f"CIFAR-10-C ({c['source']})  mean-15 "
                 f"{'n/a' if mean is None else f'{mean:.2f}%'}; per corruption: " +
                 ", ".join(f"{k} {v:.1f}" for k, v in sorted(c["mean_per_corruption"].items())))
  if "cinic_imagenet" in results:
    c = results["cinic_imagenet"]
    lines.append(f"CINIC-10 ImageNet   {c['accuracy']:.2f}%" if c["status"] == "ok"
                 else f"CINIC-10 ImageNet   skipped: {c['reason']}")
  return lines


def _define_flags():
  flags.DEFINE_string("workdir", None, "Folder of a finished run to evaluate.")
  eval_values = flags.FlagValues()
  config_lib.define_flags(eval_values)
  for f in dataclasses.fields(EvalOptions):
    flags.DEFINE_flag(eval_values[f.name])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    if not flags.FLAGS.workdir:
      raise ConfigError("--workdir: expected the folder of a finished run")
    overrides = {f.name: config_lib.flag_value(flags.FLAGS, f)
                 for f in dataclasses.fields(EvalOptions) if flags.FLAGS[f.name].present}
    results = evaluate_run(flags.FLAGS.workdir, overrides)
    print("\n".join(summary_lines(results)), flush=True)
  except NkdError as e:
    print(f"nkd: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
