"""One run, the whole pipeline: train the teacher a distillation run names (once per recipe and
seed, shared by every later run), distil the student, evaluate it, write results.json.
Training (nkd/training) and evaluation (nkd/evaluation) sit side by side; this module runs one
after the other."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
from absl import logging

from nkd import config as config_lib
from nkd import cpu_kernels
from nkd import keys as keys_lib
from nkd import run_files
from nkd import runtime
from nkd import tensorboard
from nkd.data import Dataset, load_dataset
from nkd.devices import make_mesh
from nkd.errors import ConfigError, DataError
from nkd.evaluation import predict, smoothing
from nkd.evaluation.suite import run_suite
from nkd.models import create_model
from nkd.training import runlock
from nkd.training.checkpoint import Checkpointer
from nkd.training.loop import train
from nkd.training.steps import replicate
from nkd.training.teacher import Teacher, load_teacher


def setup_jax(config) -> None:
  """JAX options that change numerics are set explicitly, before any computation."""
  for note in runtime.pin_cpu(config.cpu_isa):
    logging.warning("nkd: %s", note)
  why = cpu_kernels.not_used_because()  # a bad NKD_CPU_KERNELS stops here
  if why and runtime.is_x86():
    logging.warning(
        "nkd: convolutions use XLA's code (%s), so params_sha256 differs from runs with "
        "nkd's CPU kernels (recorded in config.json)",
        why,
    )
  if config.distributed:
    jax.distributed.initialize()
  jax.config.update("jax_threefry_partitionable", True)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Runs of one shape (seeds, resumes, sweep points) compile once; results are unchanged.
    jax.config.update(
        "jax_compilation_cache_dir", os.path.abspath(os.path.join(config.workspace, "jax_cache"))
    )
  if not os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE"):
    jax.config.update("jax_compilation_cache_max_size", runtime.COMPILATION_CACHE_MAX_BYTES)
  if not os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
    # Every program, not only those over JAX's default second: a run's initialisations,
    # evaluations and attacks compile in 0.1-1 s each, and the next seed needs them all again.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  runtime.mend_compilation_cache(jax.config.jax_compilation_cache_dir)
  # A GPU flag, set where JAX computes on a GPU: on the CPU it changes nothing but the
  # compilation cache's key (a --nogpu_deterministic run would compile its own copy).
  if config.gpu_deterministic and not runtime.computes_on_cpu():
    flag = "--xla_gpu_deterministic_ops=true"
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if flag not in xla_flags:
      os.environ["XLA_FLAGS"] = f"{xla_flags} {flag}".strip()


def candidate_seeds(config) -> tuple[int, ...]:
  """The teacher seeds a distillation run trains (or reuses): --teacher_seeds, else
  --teacher_seed."""
  return tuple(config.teacher_seeds) or (config.teacher_seed,)


def ensure_teachers(tconfigs, data: Dataset) -> None:
  """Trains each teacher run that is not finished, once, however many students start together:
  each under its own file lock, first those no other process holds (so concurrent students
  train different candidates side by side), then, waiting, the rest."""

  def train_one(tconfig):
    if not os.path.exists(os.path.join(tconfig.workdir, run_files.RESULTS)):
      logging.info(
          "No teacher for recipe %s, seed %d: training it in %s.",
          tconfig.name,
          tconfig.seed,
          tconfig.workdir,
      )
    train_and_evaluate(tconfig, data)

  waiting = []
  for tconfig in tconfigs:
    with runlock.turn(tconfig.workdir, wait=False) as mine:
      if mine:
        train_one(tconfig)
      else:
        waiting.append(tconfig)
  for tconfig in waiting:
    with runlock.turn(tconfig.workdir):
      train_one(tconfig)


def choose_teacher(candidates: list[dict[str, Any]], rule: str) -> dict[str, Any]:
  """The selection record of --teacher_select=`rule` ("test" or "val") among `candidates`
  ({"seed", "workdir", "test_accuracy", "val_accuracy"}): the highest accuracy on that split,
  the first in --teacher_seeds order on a tie."""
  metric = {"test": "test_accuracy", "val": "val_accuracy"}[rule]
  for c in candidates:
    if c.get(metric) is None:
      raise ConfigError(
          f"--teacher_select={rule}: the teacher in {c['workdir']} has no "
          f"{metric} (trained without --validation_size?)"
      )
  best = max(candidates, key=lambda c: c[metric])
  return {
      "rule": rule,
      "metric": metric,
      "candidates": candidates,
      "chosen_seed": best["seed"],
      "chosen_workdir": best["workdir"],
  }


def select_teacher(config, tconfigs) -> dict[str, Any]:
  """Chooses among the finished teacher runs `tconfigs` by --teacher_select."""
  candidates = []
  for tconfig in tconfigs:
    res = run_files.read_results(tconfig.workdir)
    candidates.append(
        {
            "seed": tconfig.seed,
            "workdir": tconfig.workdir,
            "test_accuracy": res.test_accuracy,
            "val_accuracy": res.val_accuracy,
        }
    )
  selection = choose_teacher(candidates, config.teacher_select)
  logging.info("%s", selection_summary(selection))
  return selection


def selection_summary(selection: dict[str, Any]) -> str:
  """One line: each candidate's accuracy on the selection split, and the chosen seed."""
  metric = selection["metric"]
  return (
      f"teacher selection ({metric}): "
      + ", ".join(f"seed {c['seed']} {c[metric]:.2f}%" for c in selection["candidates"])
      + f" -> seed {selection['chosen_seed']}"
  )


def prepare_teacher(config, data: Dataset) -> Teacher:
  """The teacher of a distillation run: --teacher_workdir's, or its recipe's for --teacher_seed,
  or the best of --teacher_seeds by --teacher_select (each trained once, then reused)."""
  tconfigs = (
      [config_lib.teacher_config(config, seed) for seed in candidate_seeds(config)]
      if config.teacher_flagfile
      else []
  )
  expected_model = tconfigs[0].model if tconfigs else None
  selection = None
  if config.teacher_workdir:
    teacher_dir = config.teacher_workdir
  else:
    same = all(getattr(config, n) == getattr(tconfigs[0], n) for n in config_lib.DATA_OPTIONS)
    ensure_teachers(tconfigs, data if same else load_dataset(tconfigs[0]))
    teacher_dir = tconfigs[0].workdir
    if config.teacher_seeds:
      selection = select_teacher(config, tconfigs)
      teacher_dir = selection["chosen_workdir"]
  teacher = load_teacher(
      teacher_dir, num_classes=data.num_classes, dtype=config.dtype, expected_model=expected_model
  )
  if config.label_noise_shared:
    _check_shared_labels(config, teacher_dir, data)
  return dataclasses.replace(teacher, selection=selection)


def _check_shared_labels(config, teacher_dir: str, data: Dataset) -> None:
  """--label_noise_shared needs a teacher trained on these training labels with the same
  corruption (its stream is then the student's)."""
  stored = run_files.read_json(os.path.join(teacher_dir, run_files.CONFIG))
  options = stored.get("options", {})
  if (
      stored.get("data_fingerprint") != data.fingerprint()
      or options.get("label_noise_p") != config.label_noise_p
      or bool(options.get("label_noise_fixed")) != config.label_noise_fixed
  ):
    raise ConfigError(
        f"--label_noise_shared: the teacher in {teacher_dir} was not trained on "
        f"this training set with --label_noise_p={config.label_noise_p} and "
        f"--label_noise_fixed={config.label_noise_fixed}: no labels to share"
    )


def evaluate(
    config, model, variables, data: Dataset, teacher: Teacher | None = None, test_logits=None
) -> dict[str, Any]:
  """The sections of `config.eval_suite` for the eval-mode model (teacher agreement for
  students); `test_logits` from the trainer are reused, not computed again."""
  # The variables replicated on the run's mesh, as the trainer's own evaluations have them: the
  # evaluators then split their batches over its devices, and share those programs.
  mesh = make_mesh()
  variables = replicate(variables, mesh)
  teacher_model = None
  if teacher is not None:
    teacher_model = (predict.eval_apply_fn(teacher.model), replicate(teacher.variables, mesh))
  cache_dir = config.eval_cache_dir or os.path.join(config.workspace, "cache", "eval")
  return run_suite(
      predict.eval_apply_fn(model),
      variables,
      key=keys_lib.run_keys(config.seed)["eval"],
      test_images=data.test_images,
      test_labels=data.test_labels,
      options=config,
      cache_dir=cache_dir,
      teacher=teacher_model,
      test_logits=test_logits,
      input_noise_sigma=config.input_noise_sigma,
      output_dir=config.workdir,
      smoothing_apply_fn=smoothing.smoothing_apply_fn(model, config.smoothing_dtype),
      random_apply_fn=predict.noisy_apply_fn(
          model, config.eval_input_noise_sigma, config.eval_dropout
      ),
  )


def train_and_evaluate(
    config, data: Dataset, teacher: Teacher | None = None
) -> run_files.RunResults:
  """Trains the run of `config` (or finds it finished), evaluates it with its suite and writes
  results.json, whose presence marks the run finished."""
  trained = train(config, data, teacher)
  if trained.finished_before:
    return trained.results
  results = trained.results
  if set(config.suite) - {"accuracy"}:
    start = time.time()
    sections = evaluate(
        config, trained.model, trained.variables, data, teacher, trained.test_logits
    )
    results = results.with_sections({**sections, "eval_wall_time_s": round(time.time() - start, 3)})
  if jax.process_index() == 0:
    run_files.write_results(config.workdir, results)
    tensorboard.write_final(config.workdir, results, enabled=config.tensorboard)
  return results


def run(config) -> run_files.RunResults:
  """Runs `config`, training its teacher first if needed; returns the results."""
  setup_jax(config)
  data = load_dataset(config)
  teacher = prepare_teacher(config, data) if config.mode == "kd" else None
  return train_and_evaluate(config, data, teacher)


def evaluate_run(workdir: str, eval_overrides: dict[str, Any]) -> run_files.RunResults:
  """Evaluates the finished run in `workdir` again (other settings allowed) and merges the
  sections into its results.json."""
  run_files.check_finished(workdir, "workdir")
  stored = run_files.read_json(os.path.join(workdir, run_files.CONFIG))
  config = config_lib.resolve(
      config_lib.Config.from_options(stored["options"], **eval_overrides, workdir=workdir)
  )
  setup_jax(config)
  data = load_dataset(config)
  if stored.get("data_fingerprint") not in (None, data.fingerprint()):
    raise DataError(
        f"the data set found for --workdir={workdir} differs from the one it was "
        f"trained on (data_fingerprint); check --data_dir"
    )
  model = create_model(
      config.model, num_classes=data.num_classes, dtype=config.dtype, dropout_rate=config.dropout
  )
  variables = Checkpointer(os.path.join(workdir, "checkpoints")).restore_variables()
  teacher = None
  teacher_dir = (stored.get("teacher") or {}).get("workdir")
  if teacher_dir:
    teacher = load_teacher(teacher_dir, num_classes=data.num_classes, dtype=config.dtype)
  sections = evaluate(config, model, variables, data, teacher)
  results = run_files.read_results(workdir).with_sections(sections)
  run_files.write_results(workdir, results)
  tensorboard.write_final(workdir, results, enabled=config.tensorboard)
  return results
