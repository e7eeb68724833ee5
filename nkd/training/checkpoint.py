"""Checkpoints with orbax: the student's params, BatchNorm statistics, optimiser state, step.

No PRNG keys are stored: every key derives from the seed and the step. Saving is synchronous and
atomic (orbax writes to a temporary folder, then renames), so a run killed at any moment resumes
from the last complete checkpoint; a temporary folder left by a crash is removed at the next
start. Beside orbax's files each step holds `nkd_checkpoint.json`: the params_sha256 of the
saved variables (checked after a restore: a truncated or corrupted file is caught even where
orbax would read it without complaint) and the loop's progress within the epoch.

A checkpoint that cannot be restored is reported in one line and moved to
`WORKDIR/damaged_checkpoints/`, and the previous one is used; with none left, the error says what
to delete. Running out of disk space while saving leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from nkd import run_files
from nkd.errors import DiskFullError, NkdError
from nkd.fileio import write_json

SIDECAR = "nkd_checkpoint.json"
DAMAGED = "damaged_checkpoints"


class CheckpointError(NkdError):
  """No checkpoint of a run can be restored."""


def _item(state) -> dict[str, Any]:
  return {
      "params": state.params,
      "batch_stats": state.batch_stats,
      "opt_state": state.opt_state,
      "step": state.step,
  }


def _local(tree):
  """This process's copy of a replicated tree, as numpy (also in a multi-host run)."""
  return jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
      tree,
  )


def variables_sha256(item) -> str:
  """params_sha256 of a checkpoint item's {'params', 'batch_stats'} (as in results.json)."""
  return run_files.params_sha256(
      _local({"params": item["params"], "batch_stats": item["batch_stats"]})
  )


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or an error it wraps) is ENOSPC/EDQUOT, also as text from C++ layers."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, DiskFullError):
      return True
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _quiet_orbax_leftovers() -> None:
  """A failed save or restore leaves work behind that Python reports through
  sys.unraisablehook, each with a traceback: TensorStore writes calling back into orbax's event
  loop, closed by then ('RuntimeError: Event loop is closed'), and orbax's read coroutines
  collected with their errors at exit. Those say nothing new: nkd reports the failure itself
  (or it propagates with its own traceback), so they are dropped."""
  previous = sys.unraisablehook
  if getattr(previous, "nkd_quiet", False):
    return

  def hook(unraisable):
    if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
      return
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "orbax" in code.co_filename:
      return
    previous(unraisable)

  hook.nkd_quiet = True
  sys.unraisablehook = hook


def _reason(error: BaseException) -> str:
  """One line: the innermost error's first line (orbax wraps TensorStore's precise one)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip().splitlines()
  line = text[0] if text else ""
  return f"{type(error).__name__}: {line[:240]}{'...' if len(line) > 240 else ''}".rstrip(": ")


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for a TrainState.

  writer: the run's own trainer (it holds the run folder's lock): removes half-written
  temporary folders and moves damaged checkpoints aside. Readers (a teacher, nkd.evaluate) only
  read.
  """

  def __init__(self, directory: str, keep: int = 3, *, writer: bool = False):
    self.directory = os.path.abspath(directory)
    self._writer = writer
    self._keep = keep
    self._manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=self._keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=self._writer,
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, state, progress: dict[str, Any] | None = None) -> None:
    """Saves `state` at its step, with the variables' hash and the loop's `progress`.

    Out of disk space: raises DiskFullError naming the folder; the half-written step is
    removed and the earlier checkpoints are untouched (orbax deletes old ones only after a
    successful save)."""
    step = int(state.step)
    item = _item(state)
    _quiet_orbax_leftovers()
    try:
      self._manager.save(step, args=ocp.args.StandardSave(item), force=True)
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        write_json(
            os.path.join(self.step_directory(step), SIDECAR),
            {"step": step, "params_sha256": variables_sha256(item), "progress": progress or {}},
        )
    except Exception as e:  # pylint: disable=broad-except
      if not is_disk_full(e):
        raise
      self._remove_partial(step)
      previous = [s for s in self.all_steps() if s != step]
      raise DiskFullError(
          f"no space left on device writing checkpoint {self.step_directory(step)}; "
          f"the previous checkpoint ({f'step {previous[-1]}' if previous else 'none'}) is "
          f"intact: free space and run the same command again to resume"
      ) from None

  def _remove_partial(self, step: int) -> None:
    """Removes what a failed save of `step` left (its temporary or unfinished folder)."""
    if jax.process_index() != 0:
      return
    for path in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
      shutil.rmtree(path, ignore_errors=True)
    sidecar = os.path.join(self.step_directory(step), SIDECAR)
    if os.path.isdir(self.step_directory(step)) and not os.path.exists(sidecar):
      shutil.rmtree(self.step_directory(step), ignore_errors=True)
    self._reload()

  def _reload(self):
    self._manager.close()
    self._manager = self._open()

  def read_sidecar(self, step: int) -> dict[str, Any] | None:
    """The step's nkd_checkpoint.json (None for a checkpoint written before it existed)."""
    path = os.path.join(self.step_directory(step), SIDECAR)
    if not os.path.exists(path):
      return None
    return run_files.read_json(path)

  def _restore_checked(self, step: int, abstract=None) -> tuple[dict[str, Any], dict]:
    """Restores `step` and checks it against its recorded hash; raises on any failure."""
    args = (
        ocp.args.StandardRestore(abstract) if abstract is not None else (ocp.args.StandardRestore())
    )
    sidecar = self.read_sidecar(step)
    item = self._manager.restore(step, args=args)
    if sidecar is not None:
      digest = variables_sha256(item)
      if digest != sidecar.get("params_sha256"):
        raise ValueError(
            f"params_sha256 {digest[:16]} differs from the "
            f"{str(sidecar.get('params_sha256'))[:16]} saved with it"
        )
    return item, (sidecar or {}).get("progress") or {}

  def restore(self, state) -> tuple[Any, dict[str, Any]]:
    """Restores the latest good checkpoint into the structure, shapes and shardings of `state`;
    returns (state, the loop's progress saved with it).

    A checkpoint that cannot be restored is reported in one line and moved to
    ../damaged_checkpoints/ (so training on writes that step again), and the one before it is
    tried. Raises CheckpointError, naming what to delete, when none can be restored."""
    _quiet_orbax_leftovers()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _item(state))
    failures = []
    for step in reversed(self.all_steps()):
      try:
        item, progress = self._restore_checked(step, abstract)
      except Exception as e:  # pylint: disable=broad-except
        failures.append((step, _reason(e)))
        continue
      if failures:
        moved = [self._move_damaged(s) for s, _ in failures]
        for (bad, reason), where in zip(failures, moved):
          logging.warning(
              "Checkpoint step %d in %s cannot be restored (%s); moved to %s, "
              "resuming from step %d.",
              bad,
              self.directory,
              reason,
              where,
              step,
          )
      state = state.replace(
          params=item["params"],
          batch_stats=item["batch_stats"],
          opt_state=item["opt_state"],
          step=item["step"],
      )
      return state, progress
    metrics = os.path.join(os.path.dirname(self.directory), run_files.METRICS)
    raise CheckpointError(
        f"no checkpoint in {self.directory} can be restored ("
        + "; ".join(f"step {s}: {r}" for s, r in failures)
        + f"); to train this run again from step 0, delete that folder and {metrics}"
    )

  def _move_damaged(self, step: int) -> str:
    target = os.path.join(os.path.dirname(self.directory), DAMAGED, str(step))
    if not self._writer or jax.process_index() != 0:
      return "(not moved)"
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(os.path.dirname(self.directory), DAMAGED, f"{step}.{n}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(self.step_directory(step), target)
    self._reload()
    return target

  def restore_variables(self, step: int | None = None) -> dict[str, Any]:
    """The {'params', 'batch_stats'} of a checkpoint, as saved (for a frozen teacher, or
    nkd.evaluate): the final one, checked; never an earlier one in its place."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    _quiet_orbax_leftovers()
    try:
      item, _ = self._restore_checked(step, self._on_this_process(step))
    except Exception as e:  # pylint: disable=broad-except
      workdir = os.path.dirname(self.directory)
      raise CheckpointError(
          f"checkpoint {self.step_directory(step)} cannot be restored ({_reason(e)}); delete "
          f"{os.path.join(workdir, run_files.RESULTS)} and run that run's command again: it "
          f"resumes from the checkpoint before and trains the final steps again"
      ) from None
    return {"params": item["params"], "batch_stats": item["batch_stats"]}

  def _on_this_process(self, step: int):
    """The checkpoint's structure, shapes and dtypes on this process's first device, so that a
    run saved on N devices is restored on any number of them (evaluation, a frozen teacher)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = (
        ocp.StandardCheckpointer()
        .metadata(os.path.join(self.step_directory(step), "default"))
        .item_metadata
    )
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        dict(metadata),
        is_leaf=lambda m: hasattr(m, "shape"),
    )

  def close(self):
    self._manager.close()


def tree_shapes(tree) -> list[tuple[str, tuple[int, ...]]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [
      (jax.tree_util.keystr(path), tuple(getattr(leaf, "shape", np.shape(leaf))))
      for path, leaf in flat
  ]
