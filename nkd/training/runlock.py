"""File locks on run folders, two kinds; both are `flock`s, which the kernel drops when their
process ends, however it ends (SIGKILL, a crash, a lost node).

`hold(workdir)`: one writer per run folder. `WORKDIR/run.lock`, held while a process trains or
evaluates the run, names its holder (pid, host, start time); a second process is refused with
WorkdirBusyError. It is removed when done; one left by a killed process is taken over.

`turn(workdir)`: the processes that need the same run (a teacher shared by students) take turns:
the first trains it, the others wait, then find it finished. `WORKDIR.lock`, beside the folder,
is kept.

Where the file system has no flock (some network file systems), `hold`'s file itself is the lock
(created exclusively: taken over when its process is gone from this host, reported with the file
to delete when held from another host) and `turn` does not wait (`hold` still refuses a second
trainer).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator

from nkd.errors import NkdError

LOCK = "run.lock"


class WorkdirBusyError(NkdError):
  """Another process trains or evaluates in the same run folder."""


# Locks this process holds: folder -> [open file (None for the file-is-the-lock scheme), count].
_held: dict[str, list] = {}


def _holder_text(path: str) -> str:
  try:
    with open(path) as f:
      info = json.load(f)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info.get('pid')} on {info.get('host')} (running since {started})"
  except (OSError, ValueError, AttributeError):
    return "another process"


def _describe_self() -> str:
  return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def _busy(workdir: str, path: str, file_is_lock: bool = False) -> WorkdirBusyError:
  gone = f" (if that process is gone, delete {path})" if file_is_lock else ""
  return WorkdirBusyError(
      f"--workdir={workdir} is in use by {_holder_text(path)}{gone}: one "
      f"process at a time trains or evaluates a run folder; wait for it to "
      f"finish (or stop it) and run the same command again"
  )


def _alive_here(path: str) -> bool:
  """Whether the lock file's process still runs (True when that cannot be told)."""
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return False  # Unreadable: a holder that died while writing it.
  if info.get("host") != socket.gethostname():
    return True
  try:
    os.kill(int(info["pid"]), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, ValueError, TypeError):
    return True
  return True


def _acquire_exclusive_file(workdir: str, path: str) -> None:
  """The lock as a file created with O_EXCL (for file systems without flock)."""
  for _ in range(2):
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      if _alive_here(path):
        raise _busy(workdir, path, file_is_lock=True) from None
      os.remove(path)  # Stale: its process is gone.
      continue
    with os.fdopen(fd, "w") as f:
      f.write(_describe_self() + "\n")
    return
  raise _busy(workdir, path, file_is_lock=True)


def lock_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), LOCK)


def turn_path(workdir: str) -> str:
  return os.path.abspath(workdir) + ".lock"


def _flock(path: str, *, wait: bool):
  """`path` opened and flocked exclusively (waiting for it, if asked); None where the file
  system has no flock. Raises BlockingIOError if another process holds it and wait=False."""
  existed = os.path.exists(path)
  f = open(path, "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
  except BlockingIOError:
    f.close()
    raise
  except OSError as e:
    f.close()
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      raise
    if not existed:
      os.remove(path)
    return None
  return f


def _acquire_flock(workdir: str, path: str):
  """The open run lock file, flocked; None where the file system has no flock."""
  while True:
    try:
      f = _flock(path, wait=False)
    except BlockingIOError:
      raise _busy(workdir, path) from None
    if f is None:
      return None
    try:  # The holder before may have removed the file after we opened it: lock the new one.
      if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
        return f
    except FileNotFoundError:
      pass
    f.close()


@contextlib.contextmanager
def hold(workdir: str, *, create: bool = True) -> Iterator[None]:
  """Holds the run folder's lock for the body; raises WorkdirBusyError if another process has
  it. Re-entrant within a process (the pipeline holds it around training, which holds it too).
  create=False: a folder that does not exist is not created (and needs no lock)."""
  if not os.path.isdir(workdir):
    if not create:
      yield
      return
    os.makedirs(workdir, exist_ok=True)
  path = lock_path(workdir)
  key = os.path.realpath(workdir)
  if key in _held:
    _held[key][1] += 1
  else:
    f = _acquire_flock(workdir, path)
    if f is None:
      _acquire_exclusive_file(workdir, path)
    else:
      f.seek(0)
      f.truncate()
      f.write(_describe_self() + "\n")
      f.flush()
    _held[key] = [f, 1]
  try:
    yield
  finally:
    entry = _held[key]
    entry[1] -= 1
    if entry[1] == 0:
      del _held[key]
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # While still held: a process waiting for it re-opens the path.
      if entry[0] is not None:
        entry[0].close()


@contextlib.contextmanager
def turn(workdir: str, *, wait: bool = True) -> Iterator[bool]:
  """This process's turn at the run in `workdir`, for the body: waits while another process has
  it. Yields whether it has the turn: always with wait=True; with wait=False, False at once
  while another process has it (and the body should not train the run)."""
  path = turn_path(workdir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    f = _flock(path, wait=wait)
  except BlockingIOError:
    yield False
    return
  try:
    yield True
  finally:
    if f is not None:
      f.close()  # Releases the flock; the file stays for the next process.
