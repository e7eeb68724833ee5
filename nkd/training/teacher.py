"""A frozen teacher: a finished run's model and variables, checked against its architecture."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from nkd import run_files
from nkd.errors import NkdError
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd.training.checkpoint import Checkpointer, tree_shapes


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen teacher: its model, its variables, and where they came from."""

  model: Any
  variables: Any
  workdir: str
  results: run_files.RunResults
  # How it was chosen among candidate seeds (--teacher_seeds): recorded with the student.
  selection: dict | None = None


def load_teacher(
    workdir: str, *, num_classes: int, dtype: str, expected_model: str | None = None
) -> Teacher:
  """A finished teacher run as a frozen Teacher, checked against its architecture."""
  run_files.check_finished(workdir, "teacher_workdir")
  options = run_files.read_json(os.path.join(workdir, run_files.CONFIG))["options"]
  if expected_model and options["model"] != expected_model:
    raise NkdError(
        f"teacher checkpoint in {workdir} is a {options['model']}, but the teacher "
        f"recipe expects a {expected_model}"
    )
  model = create_model(
      options["model"],
      num_classes=num_classes,
      dropout_rate=options.get("dropout", 0.0),
      dtype=dtype,
  )
  variables = Checkpointer(os.path.join(workdir, "checkpoints")).restore_variables()
  # Shapes only: traced, not compiled (the checkpoint's variables are what the teacher uses).
  expected = tree_shapes(jax.eval_shape(lambda key: init_variables(model, key), jax.random.key(0)))
  if tree_shapes(variables) != expected:
    raise NkdError(
        f"teacher checkpoint in {workdir}/checkpoints does not hold a "
        f"{options['model']} with {num_classes} classes (parameter shapes differ)"
    )
  return Teacher(
      model=model, variables=variables, workdir=workdir, results=run_files.read_results(workdir)
  )
