"""One writer per run folder: `WORKDIR/run.lock`, held while a process trains or evaluates the
run, and removed when it is done (a finished run folder holds none).

The lock is an `flock` on that file, so the kernel drops it when its process ends, however it
ends (SIGKILL, a crash, a lost node): a lock file left behind by a killed process is stale and
is simply taken over. The file names its holder (pid, host, start time) for the message a second
process prints. Where the file system has no flock (some network file systems), the file itself
is the lock (created exclusively); a stale one is taken over when its process is gone from this
host, and one held from another host is reported with the file to delete.
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
  return WorkdirBusyError(f"--workdir={workdir} is in use by {_holder_text(path)}{gone}: one "
                          f"process at a time trains or evaluates a run folder; wait for it to "
                          f"finish (or stop it) and run the same command again")


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


def _acquire_flock(workdir: str, path: str):
  """The open lock file, flocked; None where the file system has no flock."""
  while True:
    existed = os.path.exists(path)
    f = open(path, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.close()
      raise _busy(workdir, path) from None
    except OSError as e:
      f.close()
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        raise
      if not existed:
        os.remove(path)
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
