"""How many runs fit at once: the first device's platform and memory, asked in a child process
(so the sweep itself holds no GPU memory), against a conservative estimate of one run's peak.

On a GPU N runs must fit together into their XLA_PYTHON_CLIENT_MEM_FRACTION of the memory JAX
reports (memory_stats()['bytes_limit']), each into its own; on a CPU into MemAvailable; on a TPU
one process holds the chips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Sequence

from nkd.config import parse_model_name, teacher_config
from nkd.errors import NkdError
from nkd.sweep import SweepError

GIB = 1 << 30

_PROBE = """
import json, jax
d = jax.devices()[0]
stats = None
try:
  stats = d.memory_stats()
except Exception:
  pass
print(json.dumps({"platform": d.platform, "kind": d.device_kind,
                  "bytes_limit": (stats or {}).get("bytes_limit")}))
"""


def probe_device(env: dict[str, str]) -> dict[str, Any]:
  """Platform and memory of the first device, asked in a child process: the sweep itself never
  initialises a backend, so it holds no GPU memory."""
  probe_env = {
      **env,
      "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
      "XLA_PYTHON_CLIENT_MEM_FRACTION": "1.0",
  }
  try:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=probe_env, capture_output=True, text=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (subprocess.SubprocessError, json.JSONDecodeError, IndexError, OSError):
    return {"platform": "unknown", "kind": "unknown", "bytes_limit": None}


def available_host_bytes() -> int | None:
  """MemAvailable of /proc/meminfo (None where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _activation_elements(model: str) -> int:
  """Elements per image a WRN keeps for its backward pass: about 7 tensors of each block's
  width (input, BN, ReLU, conv outputs, dropout mask) at that block's resolution."""
  depth, width = parse_model_name(model)
  blocks = (depth - 4) // 6
  per_block = (32 * 32 * 16 + 16 * 16 * 32 + 8 * 8 * 64) * width
  return 7 * blocks * per_block + 32 * 32 * 16


def estimate_run_bytes(config, platform: str) -> int:
  """A conservative (high) estimate of one run's peak memory on `platform`.

  Counts the data set on the device, the student's training activations and their gradients at
  --batch_size (float32 even for bfloat16), an evaluation batch, a teacher trained in the same
  process, and a fixed overhead (the CUDA context and XLA's scratch on a GPU; Python, JAX and
  the compiler on a CPU), then adds half again. Measured on a 2-core CPU: WRN-16-2 at batch 128
  peaks at 1.3 GiB resident; this estimates 3.8 GiB.
  """
  n_images = (
      config.synthetic_train_size + config.synthetic_test_size
      if config.dataset == "synthetic"
      else 60000
  )
  if config.train_subset:
    n_images = min(n_images, config.train_subset + 10000)
  data = n_images * (32 * 32 * 3 + 4)

  def training(model, batch):
    return 2 * 4 * batch * _activation_elements(model)

  def evaluating(model, batch):
    return 3 * 4 * batch * 32 * 32 * 16 * parse_model_name(model)[1]

  work = max(
      training(config.model, config.batch_size), evaluating(config.model, config.eval_batch_size)
  )
  if config.mode == "kd" and config.teacher_flagfile:
    try:
      teacher = teacher_config(config)
      work = max(
          work,
          training(teacher.model, teacher.batch_size),
          evaluating(teacher.model, config.batch_size) + training(config.model, config.batch_size),
      )
    except NkdError:
      pass
  if platform == "cpu":
    total = GIB + 3 * data + work  # host copy, device copy, and loading
  else:
    total = GIB + data + work
  return int(1.5 * total)


def check_parallel(
    parallel: int, configs: Sequence[Any], env: dict[str, str], mem_per_run_gb: float | None
) -> str:
  """Raises SweepError if `parallel` runs do not fit; returns a one-line account."""
  if mem_per_run_gb == 0:
    return "memory check skipped (--mem_per_run_gb=0)"
  device = probe_device(env)
  platform = device["platform"]
  if platform == "tpu" and parallel > 1:
    raise SweepError(
        f"--parallel={parallel}: a TPU is held by one process at a time; use " f"--parallel=1"
    )
  if mem_per_run_gb is not None:
    per_run = int(mem_per_run_gb * GIB)
  else:
    per_run = max(
        [estimate_run_bytes(c, platform) for c in configs if c is not None], default=2 * GIB
    )
  if platform == "cpu":
    available, where = available_host_bytes(), "available host memory (/proc/meminfo)"
    if available is None:
      return "memory check skipped: no /proc/meminfo"
  else:
    limit = device.get("bytes_limit")
    if not limit:
      return f"memory check skipped: no memory figure for platform {platform}"
    # Each run's allocator may take XLA_PYTHON_CLIENT_MEM_FRACTION of the device (JAX's
    # default: 0.75): the fractions must fit together, and a run must fit in its own.
    fraction = float(env.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
    if parallel * fraction > 1.0 + 1e-6:
      raise SweepError(
          f"--parallel={parallel} runs with XLA_PYTHON_CLIENT_MEM_FRACTION="
          f"{fraction:g} each would need {parallel * fraction:.0%} of the "
          f"{device.get('kind', platform)}; lower --mem_fraction"
      )
    available = int(parallel * fraction * limit)
    where = (
        f"{parallel} x {fraction:.3g} of the {device.get('kind', platform)}'s "
        f"{limit / GIB:.0f} GiB"
    )
  account = (
      f"{parallel} x {per_run / GIB:.1f} GiB estimated per run vs {available / GIB:.1f} "
      f"GiB: {where}"
  )
  if parallel * per_run > available:
    if platform == "cpu":
      most = max(1, available // per_run)
      advice = f"use --parallel={most} or less"
    else:
      most = max(1, int(0.9 * limit) // per_run)
      advice = (
          f"use --parallel={most} or less (each with --mem_fraction {0.9 / most:.3g}, "
          f"the default)"
      )
    raise SweepError(
        f"--parallel={parallel} does not fit: {account}; {advice} (or "
        f"--mem_per_run_gb to override the estimate)"
    )
  return account
