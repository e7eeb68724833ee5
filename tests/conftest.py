"""Session fixtures: the compilation cache shared by the test processes, finished tiny runs
that several test files use, and the optional real CIFAR-10. Helpers live in helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Compiled programs are cached across the test processes of one session: most tests compile
# the same tiny WRNs, and compiling, not running, is what costs time on a CPU.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.environ.get("TMPDIR", "/tmp"), "nkd-test-jax-cache"),
)
# Every program: the tiny ones that compile in under half a second add up over the session.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# glibc's allocator with several arenas in the test processes and the runs they start (a user's
# allocator setting, which nkd records and leaves alone: nkd.runtime.tune_malloc): the suite is
# mostly compiling, on XLA's compile threads at once, and one arena (nkd's setting for a run,
# where large train steps dominate) serializes their allocations. Speed only: no result
# depends on the allocator. Measured on a 2-vCPU Zen 3: a tiny KD run's process 40-48 s of CPU
# against 58-59 s with one arena (BENCHMARKS.md).
os.environ.setdefault("MALLOC_ARENA_MAX", "8")
# The processes the tests start keep their freed memory as well (no mmap, no trim: the rest of
# nkd's own setting), so that a run's XLA temporaries reuse the last step's pages instead of
# faulting in fresh ones: the demo's process 100 -> 93 s of CPU, the real-CIFAR-10 run's 53-65 ->
# 47-49 s, a tiny run's the same (2-vCPU Zen 3, BENCHMARKS.md). The test processes themselves
# go without it: their compiling got 3% slower with it. Set in each test process for its
# children (pytest_configure), not in pytest-xdist's controller, whose environment the test
# processes inherit; a user's own settings of these win.
CHILD_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def pytest_configure(config):
  workers = config.getoption("numprocesses", default=None)
  if hasattr(config, "workerinput") or not workers:  # a test process, not xdist's controller
    for name, value in CHILD_MALLOC.items():
      os.environ.setdefault(name, value)


# The CPU settings a run makes (nkd.runtime.pin_cpu) hold in the test processes too, made before
# JAX starts: in-process runs compute as `nkd.main` does.
from nkd import runtime  # noqa: E402

# The cache is read and written under a file lock, as in nkd runs: two workers compiling the
# same program at once otherwise abort on a half-written entry.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(runtime.COMPILATION_CACHE_MAX_BYTES))

runtime.pin_cpu(runtime.DEFAULT_CPU_ISA)

# The test processes compile with the settings of helpers.TEST_COMPILE_SETTINGS where nkd's runs
# use their own: LLVM at -O0 instead of -O1 (runtime.CPU_OPT_LEVEL), and XLA:CPU's older
# loop-fusion code generator instead of its MLIR fusion emitters. The suite is mostly
# compiling: a tiny KD step compiles in 3.6-3.9 s of CPU at -O1, 2.0-2.2 s at -O0 and 1.6-1.8 s
# at -O0 without the emitters (2-vCPU Zen 3; BENCHMARKS.md). Their checks relate programs of one
# process (bit-for-bit references, determinism, one compilation per shape), never a pinned hash;
# the runs they start as child processes (the demo's pinned hashes, resumes, sweeps) inherit
# nkd's settings, as a user's do, and JAX's compilation cache keys each program by them. XLA
# reads XLA_FLAGS once, at its first compilation, so the settings are made around that one and
# recorded as the tests'. (helpers imports JAX and nkd's models: no computation, so XLA has
# read no flags yet.)
from helpers import compile_settings_for_tests, fast_compile_flags  # noqa: E402

_XLA_FLAGS_FOR_CHILDREN = os.environ.get("XLA_FLAGS", "")
_level = runtime._pinned["settings"].get(runtime.OPT_LEVEL_FLAG, {})  # pylint: disable=protected-access
_AT_TEST_LEVEL = _level.get("source") == "nkd"  # nkd's -O1: the CPU computes, the user set none
if _AT_TEST_LEVEL:
  os.environ["XLA_FLAGS"] = fast_compile_flags(_XLA_FLAGS_FOR_CHILDREN)

import jax  # noqa: E402

try:  # JAX's private module: a JAX without it keeps its own eviction.
  from jax._src import lru_cache  # pylint: disable=g-import-not-at-top
except ImportError:
  lru_cache = None

# JAX's cache, with a size limit, lists the whole folder at every write to see whether it is
# over the limit: a stat and a read of each entry's access-time file, under the lock every test
# process waits on. A session writes about 1,500 entries (30 MB of the 8 GiB limit), the last
# scans taking 0.11 s each: about 85 s of CPU a session with an empty cache (2-vCPU Zen 3).
# The test processes skip the scan (the lock stays); runs (nkd.main) keep JAX's eviction.
if hasattr(getattr(lru_cache, "LRUCache", None), "_evict_if_needed"):
  lru_cache.LRUCache._evict_if_needed = lambda self, *, additional_size=0: None

# Four fake CPU devices in every test process, set before JAX starts its backend: sharding is
# tested in-process on meshes of 1, 2 and 4 of them (tests/test_sharding.py: the train step
# with every random stream on, the evaluators, the run's own mesh; helpers.mesh_of). Child
# processes (run_module) keep their one device; tests/test_launch.py trains a whole run on 4
# devices in 2 processes.
FAKE_CPU_DEVICES = 4
jax.config.update("jax_num_cpu_devices", FAKE_CPU_DEVICES)
if _AT_TEST_LEVEL:
  jax.jit(lambda x: x + 1)(0).block_until_ready()  # XLA reads XLA_FLAGS here
  os.environ["XLA_FLAGS"] = _XLA_FLAGS_FOR_CHILDREN
  for _name, _value in compile_settings_for_tests(_XLA_FLAGS_FOR_CHILDREN).items():
    runtime._pinned["settings"][_name] = {  # pylint: disable=protected-access
        "value": _value,
        "source": "tests/conftest.py",
    }

from helpers import (
    REPO,
    SHARED_CIFAR10,
    TINY,
    once_per_session,
    run_cli,
    tiny_config,  # noqa: E402,F401
    tiny_flags,
)
from nkd import cli  # noqa: E402
from nkd import devices as nkd_devices  # noqa: E402

# The runs the tests make in-process (nkd.pipeline, nkd.training.loop, the run's mesh and its
# recorded device count) compute on the first of those devices, as a run on a one-device
# machine does; a test asks for all of them with the `run_on_all_devices` fixture. A partitioned
# program costs more to compile and to run on 2 shared cores: tests/test_experiments.py took
# 98 s of CPU with its runs on 4 devices, 79 s on one (93 s on 2; 2-vCPU Zen 3, `-n 0`).
_RUN_DEVICES = nkd_devices.run_devices
nkd_devices.run_devices = lambda: _RUN_DEVICES()[:1]


@pytest.fixture
def run_on_all_devices(monkeypatch):
  """In-process runs compute on every device of the test process (4 fake CPU ones)."""
  monkeypatch.setattr(nkd_devices, "run_devices", _RUN_DEVICES)


# The test processes load JAX as nkd.main does (cli.load_pipeline: the garbage collector's
# thresholds raised, the imports' objects frozen; the allocator is the one set above).
cli.load_pipeline()


@pytest.fixture(scope="session", autouse=True)
def _share_trained_tiny(tmp_path_factory):
  """helpers.trained_tiny trains each small model once per session, not once in each test
  process (the evaluators' tests of several files use the same one)."""
  import helpers  # pylint: disable=g-import-not-at-top

  helpers.SHARED_FOLDER = helpers.session_folder(tmp_path_factory)
  yield
  helpers.SHARED_FOLDER = None


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
  """A finished 1-epoch WRN-10-1 teacher and a student distilled from it (accuracy-only
  suite), trained in a test process, once per session (the test processes share it; tests
  read it, or copy it to change it): (workspace, teacher workdir, student workdir)."""
  from nkd import pipeline  # pylint: disable=g-import-not-at-top

  def build(ws):
    teacher = tiny_config(ws, epochs=1, workspace=str(ws), workdir=str(ws / "teacher"))
    pipeline.run(teacher)
    student = tiny_config(
        ws,
        epochs=1,
        mode="kd",
        teacher_workdir=teacher.workdir,
        workspace=str(ws),
        workdir=str(ws / "student"),
    )
    pipeline.run(student)

  ws = once_per_session(tmp_path_factory, "finished_runs", build)
  return ws, ws / "teacher", ws / "student"


def _shared_cifar10_or_skip():
  if not (SHARED_CIFAR10 / "cifar10_jpeg.npz").exists():
    pytest.skip("../shared/data/cifar10 is not present")
  return SHARED_CIFAR10


@pytest.fixture
def cifar10_shared():
  return _shared_cifar10_or_skip()


@pytest.fixture(scope="session")
def cifar10_official(tmp_path_factory):
  """../shared's CIFAR-10 in the official Python format, as its make_cifar10_python.py writes
  it (DIR/cifar-10-batches-py/ and DIR/cifar-10-python.tar.gz), once per test session: decoding
  the 60,000 JPEGs takes about 15 s. Tests read it and write elsewhere."""
  shared = _shared_cifar10_or_skip()

  def build(folder):
    subprocess.run(
        [sys.executable, str(shared / "make_cifar10_python.py"), str(folder), "--tar"],
        check=True,
        capture_output=True,
    )

  return once_per_session(tmp_path_factory, "cifar10_official", build)
