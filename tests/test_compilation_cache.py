"""A run's persistent compilation cache is read and written under JAX's file lock (a size cap):
unlocked, a process that read an entry another was still writing loaded a truncated program and
aborted (two test workers did, every time, on a fresh cache)."""

import os
import subprocess
import sys

from helpers import REPO

from nkd import runtime

PROBE = """
import sys
import jax
from nkd import pipeline
from helpers import tiny_config
config = tiny_config(__import__("pathlib").Path(sys.argv[1]))
pipeline.setup_jax(config)
jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready()
print(jax.config.jax_persistent_cache_min_compile_time_secs)
print(jax.config.jax_compilation_cache_max_size)
"""


def _probe(tmp_path, **env) -> tuple[float, int]:
  """A run's (minimum compile time of a cached program, cache size cap), in a fresh process."""
  clean = {
      k: v
      for k, v in os.environ.items()
      if k
      not in (
          "JAX_COMPILATION_CACHE_DIR",
          "JAX_COMPILATION_CACHE_MAX_SIZE",
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
      )
  }
  proc = subprocess.run(
      [sys.executable, "-c", PROBE, str(tmp_path)],
      cwd=REPO,
      env={
          **clean,
          "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
          **env,
      },
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  min_compile_time, max_size = proc.stdout.split()[-2:]
  return float(min_compile_time), int(max_size)


def test_the_workspace_cache_is_capped_and_locked(tmp_path):
  min_time, cap = _probe(tmp_path)
  assert cap == runtime.COMPILATION_CACHE_MAX_BYTES > 0
  # Every program is cached: JAX's default keeps only those that took a second to compile, and
  # the next seed needs a run's initialisations and evaluations again.
  assert min_time == 0.0
  cache = tmp_path / "ws" / "jax_cache"
  entries = sorted(p.name for p in cache.iterdir())
  # The locked, bounded cache keeps an access-time file beside each entry (the unbounded one
  # does not) and its lock file.
  assert any(n.endswith("-cache") for n in entries) and any(n.endswith("-atime") for n in entries)
  assert ".lockfile" in entries


def test_the_users_cap_wins(tmp_path):
  _, cap = _probe(tmp_path, JAX_COMPILATION_CACHE_MAX_SIZE="12345678")
  assert cap == 12345678


def test_the_users_minimum_compile_time_wins(tmp_path):
  min_time, _ = _probe(tmp_path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="2.5")
  assert min_time == 2.5


def test_an_entry_left_without_its_access_time_is_mended(tmp_path):
  """A process killed between JAX's two writes leaves KEY-cache without KEY-atime; jax 0.10's
  eviction then fails every later write. The next run gives it the oldest access time."""
  cache = tmp_path / "ws" / "jax_cache"
  cache.mkdir(parents=True)
  (cache / "orphan-cache").write_bytes(b"not a program")
  _probe(tmp_path)
  assert (cache / "orphan-atime").read_bytes() == bytes(8)
  # And the run's own program was written beside it (a failed write would leave only the orphan).
  assert len([p for p in cache.iterdir() if p.name.endswith("-cache")]) >= 2
