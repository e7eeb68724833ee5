"""The devices a run computes on: the one-axis data-parallel mesh over them, and the environment
(versions, device kind and count, CPU pinning, XLA flags) recorded in config.json, since it
decides the bits of the result as much as the recipe does."""

from __future__ import annotations

import os
import platform
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
import optax
import orbax.checkpoint
from jax.sharding import Mesh

from nkd import runtime


def environment() -> dict[str, Any]:
  devices = jax.devices()
  return {
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "jaxlib": jaxlib.__version__,
                   "flax": flax.__version__, "optax": optax.__version__,
                   "orbax_checkpoint": orbax.checkpoint.__version__, "numpy": np.__version__},
      "device": f"{devices[0].platform}:{devices[0].device_kind}",
      "device_count": len(devices),
      "process_count": jax.process_count(),
      # CPU results depend on the instruction set XLA compiled for and on the core count.
      "cpu": runtime.describe(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def make_mesh() -> Mesh:
  """Every device of every process on one axis, "data": batches are split along it."""
  return Mesh(np.asarray(jax.devices()), ("data",))
