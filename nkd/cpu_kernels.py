"""nkd's own CPU kernels (`cpu_kernels.cc`): built once per machine with the C++ compiler, loaded
as an XLA FFI library.

Two kernels: a float32 convolution (NHWC, HWIO; Winograd's F(2x2, 3x3) for stride-1 3x3
layers with 8 or more input channels, the direct sum for the others), 1.6-3.8x XLA:CPU's speed
on a WRN's stride-1 3x3 layers, and its kernel gradient (Winograd's F(3x3, 2x2) for those
layers), up to 3x (XLA transposes both operands first); nkd/models/conv.py uses them for a
network's forward pass, input gradients (written as convolutions) and kernel gradients,
BENCHMARKS.md has the figures. The library is compiled for AVX2 + FMA and its arithmetic is fixed
by the code (fused multiply-adds and additions in a set order, `-ffp-contract=off`), so it gives
the same bits on every x86-64 CPU that has them, whatever its vector width, caches or thread
count.

It is used when all of these hold, else XLA's own convolutions are (and `status()` says why,
which config.json records under `cpu.kernels`):
- an x86-64 CPU with AVX2 and FMA, and `--cpu_isa` (or the user's `--xla_cpu_max_isa`) at AVX2
  or above, or native: a lower cap asks for code without them;
- `NKD_CPU_KERNELS` is unset or `on` (`off`: XLA's convolutions, the bits of nkd before these
  kernels);
- a C++ compiler (`$CXX`, else `g++`, else `c++`) builds the library.
The build lands in `$NKD_KERNEL_DIR`, else `$XDG_CACHE_HOME/nkd` or `~/.cache/nkd`, named by a
hash of the source, the flags, the compiler and jaxlib, written under a temporary name and then
renamed, so processes building at once do not see half a file. Plain Python: imports no jax.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import tempfile
from typing import Any

from nkd import runtime
from nkd.errors import ConfigError

ENV = "NKD_CPU_KERNELS"
DIR_ENV = "NKD_KERNEL_DIR"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cc")
FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC")
ISA = "AVX2+FMA"


def _build_dir() -> str:
  if os.environ.get(DIR_ENV):
    return os.environ[DIR_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "nkd")


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "g++", "c++"):
    found = shutil.which(name) if name else None
    if found:
      return found
  return None


def _jaxlib_include() -> str | None:
  spec = importlib.util.find_spec("jaxlib")
  if not spec or not spec.origin:
    return None
  include = os.path.join(os.path.dirname(spec.origin), "include")
  return include if os.path.isfile(os.path.join(include, "xla", "ffi", "api", "ffi.h")) else None


def _allows_avx2(isa: str) -> bool:
  """Whether XLA's ISA cap `isa` (runtime.describe_isa()) admits AVX2 code."""
  return isa == runtime.NATIVE.upper() or (
      isa in runtime.CPU_ISAS and runtime.CPU_ISAS.index(isa) >= runtime.CPU_ISAS.index("AVX2")
  )


def _why_not() -> str | None:
  """Why the library is not used here, before building it; None if it may be."""
  setting = os.environ.get(ENV, "on").strip().lower()
  if setting not in ("on", "off"):
    raise ConfigError(f"environment variable {ENV}={os.environ[ENV]!r}: expected 'on' or 'off'")
  if setting == "off":
    return f"{ENV}=off"
  if not runtime.is_x86():
    return "not an x86-64 CPU"
  if "AVX2" not in runtime.host_isas():
    return "this CPU lacks AVX2 or FMA"
  isa = runtime.describe_isa()
  if not _allows_avx2(isa):
    return f"--cpu_isa {isa} is below AVX2"
  return None


@functools.cache
def _library() -> tuple[str | None, str | None]:
  """(path of the built library, None) where it is used, else (None, why XLA's code is)."""
  why = _why_not()
  if why:
    return None, why
  compiler, include = _compiler(), _jaxlib_include()
  if compiler is None:
    return None, "no C++ compiler: set CXX, or install g++"
  if include is None:
    return None, "jaxlib has no XLA FFI headers"
  try:
    with open(SOURCE, "rb") as f:
      source = f.read()
  except OSError:
    return None, f"{os.path.basename(SOURCE)} is not installed beside nkd"
  version = subprocess.run(
      [compiler, "--version"], capture_output=True, text=True, check=False
  ).stdout.splitlines()
  key = hashlib.sha256(
      b"\0".join(
          [
              source,
              " ".join(FLAGS).encode(),
              (version[0] if version else compiler).encode(),
              importlib.metadata.version("jaxlib").encode(),
          ]
      )
  ).hexdigest()[:16]
  folder = _build_dir()
  path = os.path.join(folder, f"nkd_cpu_kernels-{key}.so")
  if not os.path.exists(path):
    try:
      os.makedirs(folder, exist_ok=True)
      fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
      os.close(fd)
    except OSError as e:
      return None, f"cannot write the kernel library to {folder}: {e.strerror}; set {DIR_ENV}"
    built = subprocess.run(
        [compiler, *FLAGS, "-I", include, SOURCE, "-o", tmp],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode:
      os.unlink(tmp)
      tail = " ".join(built.stderr.strip().splitlines()[-3:])[-300:]
      return None, f"building {os.path.basename(SOURCE)} failed: {tail}"
    os.replace(tmp, path)
  return path, None


def library() -> str | None:
  """The path of the built kernel library; None where XLA's kernels are used (`status()`)."""
  return _library()[0]


def not_used_because() -> str | None:
  """Why XLA's convolutions are used here instead of nkd's kernels; None where they are not."""
  return _library()[1]


def status() -> dict[str, Any]:
  """What config.json records: which code computes the convolutions on CPU ('nkd AVX2+FMA' or
  'xla (why)')."""
  why = not_used_because()
  return {"convolutions": f"nkd {ISA}" if why is None else f"xla ({why})"}
