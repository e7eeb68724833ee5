"""Stopping a run cleanly on SIGTERM or SIGINT: finish the step, checkpoint it, exit 75.

A cluster's scheduler preempts a job with SIGTERM (SLURM: `--signal`, then SIGKILL after a grace
period); a user stops one with Ctrl-C (SIGINT). While the epoch loop runs, either signal only
sets a flag: the loop finishes the step in flight, writes a checkpoint at that step (mid-epoch
too) and raises `Preempted`, which `nkd.main` turns into one line and exit status 75
(EX_TEMPFAIL, "try again": distinct from 2, an error to fix, and from 143/130, which a shell
reports for a process killed by the signal before it could save). Running the same command again
resumes from that step and ends with the same params_sha256 as a run never stopped. A second
Ctrl-C stops at once (KeyboardInterrupt), losing the steps since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# The exit status of a run stopped by a signal after its checkpoint was written.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on a signal; the checkpoint at `step` holds everything to resume."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class StopFlag:
  """Set by SIGTERM/SIGINT while installed; the loop polls `requested` after every step."""

  def __init__(self):
    self.signal_name: str | None = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now.
    self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
  """Installs the handlers for the body (main thread only; elsewhere the flag stays unset)."""
  flag = StopFlag()
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  # pylint: disable-next=protected-access
  previous = {s: signal.signal(s, flag._handle) for s in SIGNALS}
  try:
    yield flag
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def any_process_stopping(flag: StopFlag, *, poll: bool = True) -> bool:
  """Whether any process of a multi-host run got a signal. Every process must stop at the same
  step (saving is collective), so with several processes they agree by a small all-gather, only
  where `poll` (the loop's log windows, where it waits for the device anyway): a signal is
  then acted on within --log_every steps. With one process: the flag, at every step."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() == 1:
    return flag.requested
  if not poll:
    return False
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.int32(flag.requested))))
