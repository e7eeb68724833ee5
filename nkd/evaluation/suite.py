"""Runs the evaluations named in EvalOptions.eval_suite and returns one JSON-able dict.

Keys, present only for what the suite names: "clean" (accuracy), "calibration", "pgd",
"cifar10_c", "cinic_imagenet". Each entry describes itself (eps, steps, restarts, loss, data
source, ...) and holds its wall time "time_s"; accuracies, agreement and ECE are in
percent.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from nkd.config.evaluation import EvalOptions
from nkd.errors import ConfigError
from nkd import fileio
from nkd.evaluation import autoattack, calibration, cifar10c, cinic, pgd, predict, smoothing
from nkd.evaluation.predict import ApplyFn


# fold_in tags of the evaluation key (the attacks' key is fold_in(key, --pgd_seed)).
SMOOTHING_KEY_TAG = 1_000_001
AUTOATTACK_KEY_TAG = 1_000_002


def _subset(array: np.ndarray, n: int) -> np.ndarray:
  return array[:n] if n else array


def _run_pgd(apply_fn, variables, key, images, labels, options: EvalOptions) -> dict:
  settings = options.pgd_settings()
  images, labels = _subset(images, options.pgd_num_examples), _subset(labels,
                                                                       options.pgd_num_examples)
  attack_key, sweep_key = jax.random.split(key)
  del key
  out = pgd.evaluate_pgd(apply_fn, variables, attack_key, images, labels, eps_list=settings["eps"],
                         steps_list=settings["steps"], step_size=settings["step_size"],
                         restarts=options.pgd_restarts, loss=options.pgd_loss,
                         batch_size=options.pgd_batch_size, fgsm=options.pgd_fgsm)
  out.update({"preset": options.pgd_preset, "seed": options.pgd_seed, "mode": "eval",
              "input_range": "[0, 1]"})
  if options.pgd_eps_sweep:
    n = options.pgd_sweep_num_examples or len(images)
    out["eps_sweep"] = pgd.eps_sweep(apply_fn, variables, sweep_key, images[:n], labels[:n],
                                     eps_values=options.pgd_eps_sweep,
                                     steps=options.pgd_sweep_steps, loss=options.pgd_loss,
                                     batch_size=options.pgd_batch_size)
  return out


def run_suite(apply_fn: ApplyFn, variables, *, key: jax.Array, test_images: np.ndarray,
              test_labels: np.ndarray, options: EvalOptions, cache_dir: str | None = None,
              teacher: tuple[ApplyFn, object] | None = None,
              test_logits: np.ndarray | None = None, input_noise_sigma: float = 0.0,
              output_dir: str | None = None, smoothing_apply_fn: ApplyFn | None = None,
              random_apply_fn=None) -> dict:
  """Evaluates the model `apply_fn(variables, images)` (eval mode, [0, 1] NHWC images ->
  logits) on the clean test set (uint8 NHWC) and on what `options.eval_suite` names; see the
  module docstring.

  `key` seeds the attacks (fold_in(key, options.pgd_seed)); `cache_dir` (else
  options.eval_cache_dir) holds regenerated and downloaded data; `teacher` (apply_fn,
  variables) adds agreement with it; `test_logits`, when the caller has them (the trainer's
  last evaluation), are not computed again. Smoothing uses --smoothing_sigma, else
  `input_noise_sigma` (the run's), samples with `smoothing_apply_fn` (e.g. a bfloat16 copy of
  the model; default `apply_fn`) and writes its per-example side file into `output_dir`.
  AutoAttack attacks `random_apply_fn(variables, images, key)` with --attack_eot draws when
  given (a model random at test time), else the deterministic model; its entry is added only
  when it finishes, and its gradient-masking check uses the PGD section when there is one.
  """
  options.validate()
  test_images, test_labels = np.asarray(test_images), np.asarray(test_labels).astype(np.int32)
  if test_images.dtype != np.uint8 or test_images.ndim != 4 or \
      len(test_images) != len(test_labels) or len(test_images) == 0:
    raise ValueError(f"test_images must be uint8 NHWC with one label each, got "
                     f"{test_images.dtype} {test_images.shape} and {len(test_labels)} labels")
  cache_dir = cache_dir or options.eval_cache_dir or None
  suite, results = options.suite, {}
  logits = test_logits
  accuracy = None
  if "accuracy" in suite or "calibration" in suite or "cifar10c" in suite:
    start = time.time()
    if logits is None:
      logits = predict.compute_logits(apply_fn, variables, test_images, options.eval_batch_size)
    accuracy = 100.0 * float(np.mean(np.argmax(logits, -1) == test_labels))
    if "accuracy" in suite:
      results["clean"] = {"accuracy": accuracy, "num_examples": int(len(test_labels))}
      results["clean"]["time_s"] = time.time() - start
      logging.info("Clean test accuracy %.2f%% (%d images)", accuracy, len(test_labels))
  if "calibration" in suite:
    start = time.time()
    teacher_logits = None
    if teacher is not None:
      teacher_logits = predict.compute_logits(*teacher, test_images, options.eval_batch_size)
    results["calibration"] = calibration.evaluate_calibration(
        logits, test_labels, num_bins=options.ece_bins, teacher_logits=teacher_logits)
    results["calibration"]["time_s"] = time.time() - start
    logging.info("Calibration: %s", results["calibration"])
  if "pgd" in suite:
    start = time.time()
    results["pgd"] = _run_pgd(apply_fn, variables, jax.random.fold_in(key, options.pgd_seed), test_images,
                              test_labels, options)
    results["pgd"]["time_s"] = time.time() - start
  if "cifar10c" in suite:
    start = time.time()
    data = cifar10c.load_cifar10c(
        options.cifar10c_source, folder=options.cifar10c_dir or None,
        corruptions=options.corruptions, tfds_data_dir=options.tfds_data_dir or None,
        clean_images=test_images, clean_labels=test_labels, cache_dir=cache_dir,
        seed=options.cifar10c_seed, frost_dir=options.cifar10c_frost_dir or None)
    results["cifar10_c"] = cifar10c.evaluate_cifar10c(apply_fn, variables, data, options.eval_batch_size,
                                                      options.cifar10c_severities,
                                                      clean_accuracy=accuracy)
    results["cifar10_c"]["time_s"] = time.time() - start
    logging.info("CIFAR-10-C (%s): mean_15 %s, missing %s", data.source,
                 results["cifar10_c"]["mean_15"], results["cifar10_c"]["missing"])
  if "cinic" in suite:
    start = time.time()
    results["cinic_imagenet"] = cinic.evaluate_cinic(
        apply_fn, variables, options.cinic_dir or None, cache_dir, options.eval_batch_size,
        download=options.cinic_download)
    results["cinic_imagenet"]["time_s"] = time.time() - start
    if results["cinic_imagenet"]["status"] != "ok":
      logging.warning("CINIC-10 skipped: %s", results["cinic_imagenet"]["reason"])
  if "autoattack" in suite:
    results["autoattack"] = _run_autoattack(apply_fn, variables, key, test_images, test_labels,
                                            options, random_apply_fn, results.get("pgd"),
                                            output_dir)
  if "smoothing" in suite:
    results["smoothing"] = _run_smoothing(smoothing_apply_fn or apply_fn, variables, key,
                                          test_images, test_labels, options, input_noise_sigma,
                                          output_dir)
  return results


def _run_smoothing(apply_fn, variables, key, images, labels, options: EvalOptions,
                   input_noise_sigma: float, output_dir: str | None) -> dict:
  """CERTIFY (Cohen et al.) on every k-th test image; the summary, and the per-example table
  in OUTPUT_DIR/smoothing_sigma<s>.tsv."""
  sigma = options.resolved_smoothing_sigma(input_noise_sigma)
  summary, per_example = smoothing.certify_dataset(
      apply_fn, variables, jax.random.fold_in(key, SMOOTHING_KEY_TAG), images, labels,
      sigma=sigma, n0=options.smoothing_n0, n=options.smoothing_n,
      alpha=options.smoothing_alpha, batch_size=options.smoothing_batch_size,
      num_examples=options.smoothing_num_examples, dtype=options.smoothing_dtype)
  if output_dir:
    path = os.path.join(output_dir, f"smoothing_sigma{sigma:g}.tsv")
    smoothing.write_per_example(path, per_example)
    summary["per_example_file"] = os.path.basename(path)
  logging.info("Smoothing sigma %g: certified accuracy %s, abstain %.2f%%", sigma,
               summary["certified_accuracy"], summary["abstain_rate"])
  return summary


def _run_autoattack(apply_fn, variables, key, images, labels, options: EvalOptions,
                    random_apply_fn, pgd_section: dict | None, output_dir: str | None) -> dict:
  """AutoAttack at every --autoattack_eps on the first --autoattack_num_examples test images;
  the per-example outcome (which attack broke each image) in OUTPUT_DIR/autoattack.json."""
  start = time.time()
  n = options.autoattack_num_examples or len(images)
  if n > len(images):
    raise ConfigError(f"--autoattack_num_examples={n} is more than the {len(images)} test "
                      f"images")
  random_model = options.random_at_test_time and random_apply_fn is not None
  entries, per_example = [], {}
  for index, eps in enumerate(options.autoattack_eps):
    result = autoattack.run_autoattack(
        None if random_model else apply_fn, variables,
        jax.random.fold_in(jax.random.fold_in(key, AUTOATTACK_KEY_TAG), index), images[:n],
        labels[:n], eps=eps, version=options.autoattack_version,
        batch_size=options.autoattack_batch_size,
        random_apply_fn=random_apply_fn if random_model else None,
        eot=options.attack_eot if random_model else 1, n_iter=options.autoattack_iterations,
        square_queries=options.autoattack_square_queries)
    per_example[f"{eps:g}"] = result.pop("per_example")
    result["masking_check"] = _masking_check(result, pgd_section)
    entries.append(result)
    logging.info("AutoAttack (%s) eps %.4f: robust %.2f%% (clean %.2f%%)%s",
                 options.autoattack_version, eps, result["robust_accuracy"],
                 result["clean_accuracy"],
                 "; gradient masking suspected" if result["masking_check"]["suspicious"] else "")
  out = {"version": options.autoattack_version, "name": entries[0]["name"],
         "eps": list(options.autoattack_eps), "num_examples": int(n),
         "eot": options.attack_eot if random_model else 1, "random_model": bool(random_model),
         "results": entries, "seconds": time.time() - start}
  if output_dir:
    fileio.write_json(os.path.join(output_dir, "autoattack.json"), per_example)
    out["per_example_file"] = "autoattack.json"
  return out


def _masking_check(result: dict, pgd_section: dict | None) -> dict:
  """AutoAttack's own check (Square vs the white-box stages) plus, with a PGD section at the
  same eps, PGD's budget, the eps sweep at large eps and the PGD-vs-APGD gap."""
  after = result["robust_accuracy_after"]
  kwargs = {"autoattack": result} if "square" in result["attacks"] else {}
  if pgd_section:
    same_eps = [r for r in pgd_section.get("results", [])
                if abs(r["eps"] - result["eps"]) < 1e-9]
    if same_eps:
      kwargs["pgd_budget"] = autoattack.pgd_budget_from_result({"results": same_eps})
      if "apgd-ce" in after:
        kwargs["pgd_accuracy"] = min(r["robust_accuracy"] for r in same_eps)
        kwargs["apgd_accuracy"] = after["apgd-ce"]
    if pgd_section.get("eps_sweep"):
      kwargs["large_eps_accuracy"] = pgd_section["eps_sweep"]
  return autoattack.masking_check(**kwargs)
