"""Checkpoints with orbax: the student's params, BatchNorm statistics, optimiser state, step.

No PRNG keys are stored: every key derives from the seed and the step. Saving is synchronous and
atomic (orbax writes to a temporary folder, then renames), so a run killed at any moment resumes
from the last complete checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from nkd.errors import NkdError


def _item(state) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "step": state.step}


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for a TrainState."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state) -> None:
    self._manager.save(int(state.step), args=ocp.args.StandardSave(_item(state)))
    self._manager.wait_until_finished()

  def restore(self, state, step: int | None = None):
    """Restores into the structure, shapes and shardings of `state`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _item(state))
    try:
      item = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError) as e:
      raise NkdError(f"checkpoint {self.directory}/{step} does not fit this run's model "
                     f"({str(e).splitlines()[0]})") from None
    return state.replace(params=item["params"], batch_stats=item["batch_stats"],
                         opt_state=item["opt_state"], step=item["step"])

  def restore_variables(self, step: int | None = None) -> dict[str, Any]:
    """The {'params', 'batch_stats'} of a checkpoint, as saved (for a frozen teacher)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise NkdError(f"no checkpoint in {self.directory}")
    item = self._manager.restore(step, args=ocp.args.StandardRestore())
    return {"params": item["params"], "batch_stats": item["batch_stats"]}

  def close(self):
    self._manager.close()


def tree_shapes(tree) -> list[tuple[str, tuple[int, ...]]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(path), tuple(np.shape(leaf))) for path, leaf in flat]
