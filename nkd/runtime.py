"""The host a run's numbers depend on: XLA:CPU's instruction set, pinned before JAX starts.

XLA:CPU compiles for the instruction set of the CPU it finds: the same program gives other
floating-point results (and so another `params_sha256`) with AVX-512 than with AVX2. nkd pins
`--xla_cpu_max_isa` in `XLA_FLAGS` to `--cpu_isa` (default AVX2, which every x86-64 server of the
last decade has), so a seed gives the same hash on any such CPU, for the same core count. This
must happen before JAX starts its CPU backend (the first computation or `jax.devices()`);
`pin_cpu_isa` is the first thing a run does (`nkd.pipeline.setup_jax`). A `--xla_cpu_max_isa`
the user put in `XLA_FLAGS` wins over `--cpu_isa`; one nkd put there (a sweep's child inherits
it) is nkd's to change, which the variable NKD_XLA_CPU_ISA marks.

`describe()` is what config.json records: the CPU model, the instruction sets it has, the one
XLA compiled for, the cores XLA used and the caches (the XLA flags are recorded beside it). Plain Python: importing this module
imports no jax.
"""

from __future__ import annotations

import glob
import os
import platform
import re
from typing import Any

# The values XLA accepts for --xla_cpu_max_isa (jaxlib 0.10), oldest first.
CPU_ISAS = ("SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX", "AMX_FP16")
NATIVE = "native"
DEFAULT_CPU_ISA = "AVX2"
_FLAG = "--xla_cpu_max_isa"
_MARK = "NKD_XLA_CPU_ISA"  # The --xla_cpu_max_isa value nkd itself put in XLA_FLAGS.
# /proc/cpuinfo flags that make a CPU capable of each ISA above.
_CPUINFO_FLAGS = {"SSE4_2": {"sse4_2"}, "AVX": {"avx"}, "AVX2": {"avx2", "fma"},
                  "AVX512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
                  "AVX512_VNNI": {"avx512_vnni"}, "AVX512_BF16": {"avx512_bf16"},
                  "AMX": {"amx_bf16", "amx_int8"}, "AMX_FP16": {"amx_fp16"}}

# What pin_cpu_isa did in this process (recorded by describe()).
_pinned: dict[str, Any] = {}


def _flag_value(xla_flags: str) -> str | None:
  values = re.findall(rf"{_FLAG}=(\S+)", xla_flags)
  return values[-1] if values else None


def _backend_started() -> bool:
  import sys  # pylint: disable=g-import-not-at-top
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False


def pin_cpu_isa(isa: str = DEFAULT_CPU_ISA) -> str:
  """Sets `--xla_cpu_max_isa=ISA` in XLA_FLAGS (none for 'native') unless the user set one;
  returns the setting in effect ('native' for none). Call before JAX's first computation."""
  if isa != NATIVE and isa not in CPU_ISAS:
    raise ValueError(f"unknown CPU ISA {isa!r}; expected {NATIVE} or one of {CPU_ISAS}")
  xla_flags = os.environ.get("XLA_FLAGS", "")
  present = _flag_value(xla_flags)
  if present is not None and present != os.environ.get(_MARK):
    effective, source = present.upper(), "XLA_FLAGS"  # The user's own setting wins.
  elif not is_x86():
    effective, source = NATIVE, f"native ({platform.machine()}: --cpu_isa names x86 sets)"
  else:
    effective, source = isa, "--cpu_isa"
    kept = re.sub(rf"\s*{_FLAG}=\S+", "", xla_flags).strip()
    if isa == NATIVE:
      new_flags = kept
      os.environ.pop(_MARK, None)
    else:
      new_flags = f"{kept} {_FLAG}={isa}".strip()
      os.environ[_MARK] = isa
    if new_flags:
      os.environ["XLA_FLAGS"] = new_flags
    else:
      os.environ.pop("XLA_FLAGS", None)
  if not _backend_started():
    _pinned.update(isa=effective, source=source)
  elif not _pinned:
    # JAX started before this call (a library user, a test): XLA_FLAGS as they were then
    # are what it compiles with; the change above reaches child processes only.
    _pinned.update(isa=present.upper() if present else NATIVE,
                   source="XLA_FLAGS when JAX started (before nkd could pin --cpu_isa)")
  return _pinned["isa"]


def is_x86() -> bool:
  return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo on Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def host_isas() -> list[str]:
  """The ISAs of CPU_ISAS this CPU supports (from /proc/cpuinfo's flags; [] if unknown)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((set(line.split(":", 1)[1].split()) for line in f
                    if line.startswith("flags")), set())
  except OSError:
    return []
  return [isa for isa in CPU_ISAS if _CPUINFO_FLAGS[isa] <= flags]


def cache_sizes() -> str:
  """The CPU's data caches, e.g. 'L1d 48K, L2 1024K, L3 32768K' (Linux sysfs; '' if unknown).
  XLA:CPU's convolutions and matrix products run through Eigen, which sizes its blocks by them."""
  found = []
  for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
    try:
      level, kind, size = (open(os.path.join(index, name)).read().strip()
                           for name in ("level", "type", "size"))
    except OSError:
      continue
    if kind != "Instruction":
      found.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
  return ", ".join(found)


def usable_cores() -> int:
  """Cores this process may run on (XLA:CPU sizes its thread pool by them)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def describe() -> dict[str, Any]:
  """The host facts a CPU result depends on, for config.json."""
  if _pinned:
    isa, source = _pinned["isa"], _pinned["source"]
  else:
    present = _flag_value(os.environ.get("XLA_FLAGS", ""))
    isa, source = (present.upper(), "XLA_FLAGS") if present else (NATIVE, "default")
  supported = host_isas()
  return {"model": cpu_model(), "machine": platform.machine(), "isa": isa, "isa_source": source,
          "host_isa": supported[-1] if supported else "unknown", "cores": usable_cores(),
          "cpu_count": os.cpu_count(), "caches": cache_sizes()}
