"""TensorBoard event files in a run's folder, so `tensorboard --logdir workspace/` shows every run
of a sweep side by side.

Written with tensorboardX (MIT; needs only numpy, protobuf and packaging): it writes the
standard event files, and unlike flax.metrics.tensorboard and clu's writers, which go through
TensorFlow's summary API, or torch.utils.tensorboard, which needs PyTorch, it brings in no
framework. Only process 0 writes. Logging only: the files are in no hash (params_sha256,
recipe), and `--tensorboard=false` leaves them out without changing a run's results. tensorboardX
is optional: without it a run says so in one line and writes no event files.

Tags (step: the global train step):
  train/loss, train/accuracy, train/lr, train/img_per_s   every --log_every window
  test/accuracy, val/accuracy                             every evaluated epoch
  final/...                                               the final evaluation's headline
                                                          numbers (test accuracy, ECE, NLL,
                                                          PGD-k robust accuracy, CIFAR-10-C
                                                          mean, certified accuracy, CINIC-10)
A resumed run starts its event file with a purge at its first step, so TensorBoard drops what
an earlier process logged after the checkpoint it resumed from.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
from typing import Any

from absl import logging

from nkd import run_files
from nkd.errors import import_failure

_WRITERS = itertools.count()
NOT_WRITTEN = "no TensorBoard event files are written (pip install tensorboardX)"
_said_missing = False


@contextlib.contextmanager
def _without_torch():
  """tensorboardX's writer imports PyTorch where it is installed, only to accept its tensors
  (nkd writes floats): 2.6 s of CPU in every run on a 2-vCPU Zen 4. Unless the process has
  imported PyTorch already, the import is made to fail while tensorboardX loads, and works
  again afterwards."""
  if "torch" in sys.modules:
    yield
    return
  sys.modules["torch"] = None  # `import torch` raises ImportError
  try:
    yield
  finally:
    if sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]


def summary_writer_class():
  """tensorboardX's SummaryWriter, or None (said once per process) when it cannot be
  imported."""
  global _said_missing
  try:
    with _without_torch():
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if not _said_missing:
      _said_missing = True
      why = import_failure(e, "tensorboardX")
      logging.warning("nkd: tensorboardX %s: %s", why, NOT_WRITTEN)
    return None
  return SummaryWriter


class Board:
  """Scalars into event files in `workdir`; does nothing when not `enabled`. A context
  manager: the file is flushed and closed on the way out, an exception too."""

  def __init__(self, workdir: str, enabled: bool = True, purge_step: int | None = None):
    self._writer = None
    writer_class = summary_writer_class() if enabled else None
    if writer_class is not None:
      # tensorboardX names a file by the second it was opened and would overwrite a file of
      # the same second (the final numbers written right after training): a suffix per writer.
      suffix = f".{os.getpid()}.{next(_WRITERS):04d}"
      self._writer = writer_class(
          workdir, purge_step=purge_step or None, flush_secs=30, filename_suffix=suffix
      )

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    """Writes each {tag: value} at `step` (None values are skipped) and flushes."""
    if self._writer is None:
      return
    for tag, value in values.items():
      if value is not None:
        self._writer.add_scalar(tag, float(value), int(step))
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "Board":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def headline(results: run_files.RunResults) -> dict[str, float]:
  """The final evaluation's headline numbers, as `final/...` tags."""
  out = {"final/test_accuracy": results.test_accuracy, "final/val_accuracy": results.val_accuracy}
  calibration = results.calibration or {}
  for key in ("ece", "nll", "teacher_agreement"):
    out[f"final/{key}"] = calibration.get(key)
  for r in (results.pgd or {}).get("results", []):
    out[f"final/pgd{r['steps']}_eps{r['eps']:g}_robust_accuracy"] = r["robust_accuracy"]
  corruptions = results.cifar10_c or {}
  if corruptions.get("mean_15") is not None:
    out["final/cifar10_c_mean15"] = corruptions["mean_15"]
  elif corruptions.get("mean_per_corruption"):
    out["final/cifar10_c_mean"] = statistics.fmean(corruptions["mean_per_corruption"].values())
  for radius, accuracy in (results.smoothing or {}).get("certified_accuracy", {}).items():
    out[f"final/certified_accuracy_r{radius}"] = accuracy
  cinic = results.cinic_imagenet or {}
  if cinic.get("status") == "ok":
    out["final/cinic_accuracy"] = cinic["accuracy"]
  return {k: v for k, v in out.items() if v is not None}


def write_final(workdir: str, results: run_files.RunResults, enabled: bool = True) -> None:
  """The headline numbers of `results` at its last step."""
  with Board(workdir, enabled) as board:
    board.scalars(results.steps, headline(results))
