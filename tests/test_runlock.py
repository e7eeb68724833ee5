"""runlock.turn: the processes that need the same run take turns (a teacher shared by students).
The one-writer lock, `runlock.hold`, is tested with the other failure modes in
test_reliability.py."""

import errno
import os
import threading
import time

from nkd.training import runlock


def test_a_turn_is_refused_while_taken_and_waited_for_when_asked(tmp_path):
  workdir = str(tmp_path / "teachers" / "seed_0")
  taken, release, order = threading.Event(), threading.Event(), []

  def other_process():  # flock is per open file: another thread's open conflicts like a process
    with runlock.turn(workdir) as mine:
      assert mine
      taken.set()
      release.wait(10)
      order.append("other done")

  other = threading.Thread(target=other_process)
  other.start()
  try:
    assert taken.wait(10)
    with runlock.turn(workdir, wait=False) as mine:
      assert not mine
    threading.Timer(0.2, release.set).start()
    with runlock.turn(workdir) as mine:  # Waits for the other to finish.
      assert mine and order == ["other done"]
      with runlock.turn(workdir, wait=False) as again:  # ... and is now refused to others.
        assert not again
  finally:
    release.set()
    other.join(10)
  assert os.path.exists(runlock.turn_path(workdir))  # Kept, beside the run folder:
  assert runlock.turn_path(workdir) == os.path.abspath(workdir) + ".lock"
  assert not os.path.exists(workdir)


def test_a_turn_without_flock_does_not_wait(tmp_path, monkeypatch):
  def no_flock(*args):
    raise OSError(errno.ENOLCK, "no locks")

  monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
  start = time.monotonic()
  with (
      runlock.turn(str(tmp_path / "run")) as mine,
      runlock.turn(str(tmp_path / "run"), wait=False) as also_mine,
  ):
    assert mine and also_mine
  assert time.monotonic() - start < 5
  assert not os.path.exists(runlock.turn_path(str(tmp_path / "run")))
