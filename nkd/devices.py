"""The devices a run computes on: the one-axis data-parallel mesh over them, and the environment
(versions, device kind and count, CPU pinning, XLA flags) recorded in config.json, since it
decides the bits of the result as much as the recipe does. A JAX without its CUDA plugin on a
machine with an NVIDIA GPU computes on the CPU: environment() says so in one line."""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
import optax
import orbax.checkpoint
from absl import logging
from jax.sharding import Mesh

from nkd import runtime

GPU_FIX = "pip install -r requirements-cuda.txt"
_said_gpu_unused = False


def nvidia_gpu_seen() -> str | None:
  """What shows an NVIDIA GPU on this machine (its device file or nvidia-smi), else None."""
  if os.path.exists("/dev/nvidia0"):
    return "/dev/nvidia0"
  return "nvidia-smi" if shutil.which("nvidia-smi") else None


def _platforms_chosen() -> str:
  return jax.config.jax_platforms or ""


def warn_if_gpu_unused() -> None:
  """One line, once per process, when JAX computes on the CPU of a machine with an NVIDIA GPU
  (its CUDA plugin is missing or did not load), unless the user chose the platform
  (JAX_PLATFORMS)."""
  global _said_gpu_unused
  if _said_gpu_unused or jax.default_backend() != "cpu" or _platforms_chosen():
    return
  seen = nvidia_gpu_seen()
  if seen:
    _said_gpu_unused = True
    logging.warning(
        "nkd: JAX computes on the CPU, but this machine has an NVIDIA GPU (%s): "
        "install JAX's CUDA plugin: %s",
        seen,
        GPU_FIX,
    )


def run_devices() -> list[jax.Device]:
  """The devices a run computes on: every device of every process."""
  return jax.devices()


def environment() -> dict[str, Any]:
  # The first description of a run's devices, made when it starts training.
  warn_if_gpu_unused()
  devices = run_devices()
  return {
      "versions": {
          "python": platform.python_version(),
          "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "flax": flax.__version__,
          "optax": optax.__version__,
          "orbax_checkpoint": orbax.checkpoint.__version__,
          "numpy": np.__version__,
      },
      "device": f"{devices[0].platform}:{devices[0].device_kind}",
      "device_count": len(devices),
      "process_count": jax.process_count(),
      # CPU results depend on the instruction set XLA compiled for and on the core count.
      "cpu": runtime.describe(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def make_mesh() -> Mesh:
  """The run's devices (`run_devices`: every device of every process) on one axis, "data":
  batches are split along it."""
  return Mesh(np.asarray(run_devices()), ("data",))
