"""Shared test helpers: tiny configs, the repository root, and the optional real CIFAR-10."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Compiled programs are cached across the test processes of one session: most tests compile
# the same tiny WRNs, and compiling, not running, is what costs time on a CPU.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), "nkd-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"

# A tiny, fast run: WRN-10-1 on a small synthetic set.
TINY = dict(dataset="synthetic", model="wrn-10-1", synthetic_train_size=256,
            synthetic_test_size=128, batch_size=32, epochs=2, lr_schedule="cosine",
            log_every=4, eval_suite="accuracy")


def tiny_config(tmp_path, **overrides):
  from nkd import config as config_lib
  values = {**TINY, "workspace": str(tmp_path / "ws"), "name": "tiny", **overrides}
  return config_lib.resolve(config_lib.Config(**values))


def tiny_flags(**overrides) -> list[str]:
  from nkd.config import as_flag
  return [as_flag(k, v) for k, v in {**TINY, **overrides}.items()]


def run_cli(args, *, env=None, timeout=600, check=False):
  """Runs `python -m nkd.main ARGS` in a fresh process from the repository root."""
  full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
  proc = subprocess.run([sys.executable, "-m", "nkd.main", *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode:
    raise AssertionError(f"nkd.main failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


@pytest.fixture
def cifar10_shared():
  if not (SHARED_CIFAR10 / "cifar10_jpeg.npz").exists():
    pytest.skip("../shared/data/cifar10 is not present")
  return SHARED_CIFAR10
