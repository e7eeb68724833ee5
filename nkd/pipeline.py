"""One command, the whole pipeline: train the teacher a distillation run names (once per recipe
and seed, shared by every later run), distil the student, and print a results table."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any

import jax
from absl import logging

from nkd import config as config_lib
from nkd import results as run_files
from nkd.data import load_dataset
from nkd.errors import ConfigError, NkdError
from nkd.models import create_model
from nkd.training.checkpoint import Checkpointer, tree_shapes
from nkd.training.loop import Teacher, train_and_evaluate
from nkd.models.wrn import init_variables


def setup_jax(config) -> None:
  """JAX options that change numerics are set explicitly, before any computation."""
  if config.distributed:
    jax.distributed.initialize()
  jax.config.update("jax_threefry_partitionable", True)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Runs of one shape (seeds, resumes, sweep points) compile once; results are unchanged.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.abspath(os.path.join(config.workspace, "jax_cache")))
  if config.gpu_deterministic:
    flag = "--xla_gpu_deterministic_ops=true"
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if flag not in xla_flags:
      os.environ["XLA_FLAGS"] = f"{xla_flags} {flag}".strip()


def _as_flag(name: str, value: Any) -> str:
  if isinstance(value, bool):
    return f"--{name}" if value else f"--no{name}"
  if isinstance(value, (tuple, list)):
    return f"--{name}={','.join(map(str, value))}"
  return f"--{name}={value}"


def teacher_config(config):
  """The teacher's Config: its recipe's flagfile, the student's data options, the teacher seed."""
  inherited = [_as_flag(k, getattr(config, k)) for k in config_lib.INHERITED_BY_TEACHER]
  noise = []
  if config.teacher_dropout >= 0:
    noise.append(f"--dropout={config.teacher_dropout}")
  if config.label_noise_p > 0 and config.label_noise_mode in ("T", "TS"):
    noise += [f"--label_noise_p={config.label_noise_p}", "--label_noise_mode=T",
              _as_flag("label_noise_fixed", config.label_noise_fixed)]
  teacher = config_lib.parse_flagfile(
      config.teacher_flagfile,
      [*inherited, *noise, f"--seed={config.teacher_seed}", *config.teacher_flags])
  if teacher.mode != "ce":
    raise ConfigError(f"--teacher_flagfile={config.teacher_flagfile}: a teacher recipe must "
                      f"train with --mode=ce, not {teacher.mode}")
  workdir = os.path.join(config.workspace, "teachers", f"{teacher.name}-{teacher.recipe_hash()}",
                         f"seed_{teacher.seed}")
  return teacher.replace(workdir=workdir)


@contextlib.contextmanager
def _file_lock(path: str):
  """Serialises concurrent runs that need the same teacher (one trains, the others wait)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def load_teacher(workdir: str, *, num_classes: int, dtype: str,
                 expected_model: str | None = None) -> Teacher:
  """A finished teacher run as a frozen Teacher, checked against its architecture."""
  config_path = os.path.join(workdir, run_files.CONFIG)
  results_path = os.path.join(workdir, run_files.RESULTS)
  if not os.path.exists(results_path) or not os.path.exists(config_path):
    raise NkdError(f"--teacher_workdir={workdir} holds no finished run (expected "
                   f"{run_files.CONFIG} and {run_files.RESULTS})")
  options = run_files.read_json(config_path)["options"]
  if expected_model and options["model"] != expected_model:
    raise NkdError(f"teacher checkpoint in {workdir} is a {options['model']}, but the teacher "
                   f"recipe expects a {expected_model}")
  model = create_model(options["model"], num_classes=num_classes,
                       dropout_rate=options.get("dropout", 0.0), dtype=dtype)
  variables = Checkpointer(os.path.join(workdir, "checkpoints")).restore_variables()
  expected = tree_shapes(init_variables(model, jax.random.key(0)))
  if tree_shapes(variables) != expected:
    raise NkdError(f"teacher checkpoint in {workdir}/checkpoints does not hold a "
                   f"{options['model']} with {num_classes} classes (parameter shapes differ)")
  return Teacher(model=model, variables=variables, workdir=workdir,
                 results=run_files.read_json(results_path))


def run(config) -> dict[str, Any]:
  """Runs `config`, training its teacher first if needed; prints and returns the results."""
  setup_jax(config)
  data = load_dataset(config)
  teacher = None
  rows = []
  if config.mode == "kd":
    tconfig = teacher_config(config) if config.teacher_flagfile else None
    expected_model = tconfig.model if tconfig else None
    if config.teacher_workdir:
      teacher_dir = config.teacher_workdir
    else:
      teacher_dir = tconfig.workdir
      with _file_lock(teacher_dir.rstrip("/") + ".lock"):
        if not os.path.exists(os.path.join(teacher_dir, run_files.RESULTS)):
          logging.info("No teacher for recipe %s, seed %d: training it in %s.",
                       config.teacher_flagfile, tconfig.seed, teacher_dir)
        train_and_evaluate(tconfig, data=data)
    teacher = load_teacher(teacher_dir, num_classes=data.num_classes, dtype=config.dtype,
                           expected_model=expected_model)
    rows.append(("teacher", teacher.results, teacher_dir))
  results = train_and_evaluate(config, teacher=teacher, data=data)
  rows.append(("student" if teacher else config.name, results, config.workdir))
  print_table(rows)
  return results


def print_table(rows) -> None:
  header = f"{'role':<10} {'model':<10} {'epochs':>6} {'test acc':>9} {'time':>8}  params_sha256"
  lines = [header, "-" * len(header)]
  for role, res, workdir in rows:
    lines.append(f"{role:<10} {res.get('model', ''):<10} {res.get('epochs', ''):>6} "
                 f"{res['test_accuracy']:>8.2f}% {res.get('wall_time_s', 0):>7.0f}s  "
                 f"{res['params_sha256'][:16]}  {workdir}")
  from nkd.evaluate import summary_lines  # pylint: disable=g-import-not-at-top
  role, res, _ = rows[-1]
  evaluation = summary_lines({k: v for k, v in res.items() if k != "clean"})
  if evaluation:
    lines += ["", f"evaluation of the {role}:", *("  " + line for line in evaluation)]
  print("\n".join(lines), flush=True)
