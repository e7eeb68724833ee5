"""Files that are never seen half-written: atomic writes and checksummed downloads.

`atomic_write` is the one way nkd writes a file that another process (a concurrent run, the
report, a resumed run) may read: the bytes go to a temporary file in the same folder, are
fsynced, and `os.replace` puts them in place in one step. If writing fails, the temporary file
is removed and the previous file, if any, is left as it was (a full disk raises DiskFullError,
naming the file). `download` streams a URL to `DEST.part`, hashing while it streams, checks the
expected digest and only then renames it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import urllib.request
from typing import IO, Any, Iterator

import numpy as np

from nkd.errors import DataError, DiskFullError

_CHUNK = 1 << 20
DIGESTS = ("md5", "sha256")


class ChecksumError(DataError):
  """A file's digest differs from the one expected (corrupt or incomplete)."""


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
  """`with atomic_write(path) as f:` writes `path` all at once or not at all.

  mode: "w" (text) or "wb" (bytes). The folder is created if needed; the file gets the usual
  permissions (the umask applies), not a temporary file's 0600.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Same folder (os.replace cannot cross file systems), a name no other writer picks.
  tmp = os.path.join(
      directory, f".{os.path.basename(path)}.{os.getpid()}." f"{secrets.token_hex(4)}.tmp"
  )
  try:
    with open(tmp, mode.replace("w", "x")) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      kept = "its previous version is intact" if os.path.exists(path) else "nothing was written"
      raise DiskFullError(
          f"no space left on device writing {path}; {kept}: free space and run "
          f"the same command again"
      ) from e
    raise


def write_json(path: str, data: Any, *, indent: int = 2) -> None:
  """JSON with sorted keys and a final newline, written atomically."""
  with atomic_write(path) as f:
    json.dump(data, f, indent=indent, sort_keys=True)
    f.write("\n")


def save_npy(path: str, array: np.ndarray) -> None:
  """`np.save`, atomically (through a file object: np.save would append .npy to a name)."""
  with atomic_write(path, "wb") as f:
    np.save(f, array)


def save_npz(path: str, **arrays: np.ndarray) -> None:
  """`np.savez` (uncompressed), atomically."""
  with atomic_write(path, "wb") as f:
    np.savez(f, **arrays)


def file_digest(path: str, algorithm: str = "md5") -> str:
  """Hex digest of a file, read in chunks."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, algorithm).hexdigest()


def check_digest(
    what: str, algorithm: str, digest: str, expected: str | None, *, source: str = "expected"
) -> None:
  """ChecksumError naming `what` if `expected` is given and differs (`source` says where the
  expected digest comes from: "expected", "official", "published")."""
  if expected and digest != expected.lower():
    raise ChecksumError(f"{what}: {algorithm} {digest} does not match the {source} {expected}")


def download(
    url: str,
    dest: str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, str]:
  """Downloads `url` to `dest` through `dest.part`; returns {"md5": hex, "sha256": hex}.

  Both digests are computed while streaming; an expected one that differs raises ChecksumError
  (naming the URL) and leaves neither `dest` nor `dest.part`. Network and disk failures raise
  OSError (urllib's URLError is one), also leaving nothing behind.
  """
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  part = dest + ".part"
  hashes = {name: hashlib.new(name) for name in DIGESTS}
  try:
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
      while chunk := response.read(_CHUNK):
        for h in hashes.values():
          h.update(chunk)
        out.write(chunk)
      out.flush()
      os.fsync(out.fileno())
    digests = {name: h.hexdigest() for name, h in hashes.items()}
    check_digest(f"the download from {url}", "md5", digests["md5"], md5)
    check_digest(f"the download from {url}", "sha256", digests["sha256"], sha256)
    os.replace(part, dest)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(part)
    raise
  return digests


def last_log_line(path: str) -> str:
  """The last non-empty line of a (log) file, read from its end; "" if none or unreadable."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 8192))
      lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
  except OSError:
    return ""
  lines = [line for line in lines if line]
  return lines[-1] if lines else ""
