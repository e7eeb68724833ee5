"""What a CPU result depends on, and the run-time choices of XLA:CPU pinned before JAX starts.

XLA:CPU and the libraries behind it pick kernels from the CPU they find at run time, and each
pick rounds differently. `pin_cpu` fixes every such choice that a setting reaches (WORKSPACE.md,
"What is reproducible across machines", says what each does and what remains): LLVM's
instruction set (`--xla_cpu_max_isa`), oneDNN's instruction set (`ONEDNN_MAX_CPU_ISA`, the
same), XLA's platform-dependent math (off), YNNPACK, which picks its kernels from cpuinfo (off),
and Eigen's own matrix kernels instead of oneDNN's sgemm behind them
(`TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false`: oneDNN's code path follows the cache sizes).
A setting the user made in XLA_FLAGS or the environment wins and is recorded; `describe()` is
what config.json records. Also the compilation cache's size cap, which the tests set before JAX
starts too. Plain Python: importing this module imports no jax.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import mmap
import os
import platform
import re
import tempfile
from typing import Any

# The values XLA accepts for --xla_cpu_max_isa (jaxlib 0.10), oldest first.
CPU_ISAS = ("SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX", "AMX_FP16")
NATIVE = "native"
DEFAULT_CPU_ISA = "AVX2"
# oneDNN's name for each (ONEDNN_MAX_CPU_ISA).
_ONEDNN_ISA = {
    "SSE4_2": "SSE41",
    "AVX": "AVX",
    "AVX2": "AVX2",
    "AVX512": "AVX512_CORE",
    "AVX512_VNNI": "AVX512_CORE_VNNI",
    "AVX512_BF16": "AVX512_CORE_BF16",
    "AMX": "AVX512_CORE_AMX",
    "AMX_FP16": "AVX512_CORE_AMX_FP16",
}
# /proc/cpuinfo flags that make a CPU capable of each ISA above.
_CPUINFO_FLAGS = {
    "SSE4_2": {"sse4_2"},
    "AVX": {"avx"},
    "AVX2": {"avx2", "fma"},
    "AVX512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "AVX512_VNNI": {"avx512_vnni"},
    "AVX512_BF16": {"avx512_bf16"},
    "AMX": {"amx_bf16", "amx_int8"},
    "AMX_FP16": {"amx_fp16"},
}
MAX_ISA_FLAG = "--xla_cpu_max_isa"
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"
# Pinned whatever --cpu_isa is (XLA flag -> value).
_FIXED_FLAGS = {
    "--xla_cpu_enable_platform_dependent_math": "false",
    "--xla_cpu_experimental_ynn_fusion_type": "",
}
# LLVM's optimisation level for XLA:CPU's generated code, pinned where the CPU computes: -O1
# compiles in about half the time of the default -O2 (the demo's 46 programs: 15 s -> 7.5 s on
# a 2-vCPU Zen 4) and runs as fast (the convolutions, most of a step, are nkd's kernels or
# XLA's libraries, not generated code): BENCHMARKS.md. Each level rounds its own way (XLA
# fuses multiplies and adds into FMAs on the optimised IR), so the level is part of the bits.
# XLA_FLAGS reach every backend, and on a GPU this flag is the level of its kernels' LLVM
# pipeline, so it is set only where JAX will compute on the CPU (`computes_on_cpu`).
OPT_LEVEL_FLAG = "--xla_backend_optimization_level"
CPU_OPT_LEVEL = "1"
# Other settings that can change XLA:CPU's numerics: recorded, and named when the user set one.
_WATCHED_FLAGS = (
    "--xla_cpu_enable_fast_math",
    "--xla_cpu_fast_math_honor_functions",
    "--xla_cpu_use_onednn",
    "--xla_cpu_use_xnnpack",
    "--xla_cpu_multi_thread_eigen",
    "--xla_cpu_prefer_vector_width",
    "--xla_cpu_experimental_xnn_fusion_type",
    "--xla_cpu_experimental_onednn_fusion_type",
    "--xla_cpu_disable_platform_dependent_math",
    "--xla_allow_excess_precision",
    OPT_LEVEL_FLAG,  # each level gave other bits (-O0, -O1, -O2)
    # false: XLA's older loop-fusion code generator. The same bits as the MLIR fusion emitters
    # in a tiny CE run at -O1 (BENCHMARKS.md), others for a KD step at -O0
    # (tests/test_noise_training.py): recorded, since it is part of what computed a run.
    "--xla_cpu_use_fusion_emitters",
)
_WATCHED_ENV = ("DNNL_MAX_CPU_ISA",)
# Eigen's own matrix kernels instead of oneDNN's sgemm: oneDNN's code path follows the block
# shapes Eigen sizes by the L2 and L3 caches, so its bits changed with them (WORKSPACE.md).
CONTRACTION_ENV = "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"
_MARK = "NKD_CPU_PINS"  # JSON of the settings nkd itself made (a sweep's child inherits them).

# A size cap makes JAX read and write its persistent compilation cache under a file lock
# (filelock); without one it writes entries unlocked, and a process that reads an entry another
# is still writing (parallel sweep points, test workers) loads a truncated program and aborts.
COMPILATION_CACHE_MAX_BYTES = 8 << 30


# glibc's allocator in a process that computes on the CPU. XLA:CPU allocates each train step's
# temporaries afresh (68 MB for the demo teacher's step) on a thread of its pool; glibc serves a
# request over 64 MiB from a thread's arena with a fresh mmap, returned at the free, so the
# kernel zeroes and maps every page again at each step's first writes: 3.3 million page faults,
# 7-9 s of system time in a 50-55 s demo (2-vCPU Zen 4). With one arena and no mmap the freed
# temporaries stay in the heap (up to the trim threshold) and the next step reuses them: the demo
# 4-6 s of CPU less, its train steps 15% less (BENCHMARKS.md). Only the speed changes: the
# buffers are aligned as before, and no result depends on where they are.
_MALLOC_SETTINGS = (  # (mallopt's name, its number in glibc's malloc.h, the value)
    ("M_ARENA_MAX", -8, 1),
    ("M_MMAP_MAX", -4, 0),
    ("M_TRIM_THRESHOLD", -1, 2**31 - 1),
)
# A user's own allocator settings (glibc's environment variables and tunables) or allocator
# (LD_PRELOAD) win: nkd then leaves malloc as it is, and records theirs.
_MALLOC_ENV = (
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
_malloc: dict[str, Any] = {}


def _users_allocator() -> dict[str, str]:
  """The allocator settings the user made in the environment ({} where none)."""
  mine = {name: os.environ[name] for name in _MALLOC_ENV if name in os.environ}
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc." in tunables:
    mine["GLIBC_TUNABLES"] = tunables
  preload = os.environ.get("LD_PRELOAD", "")
  if "malloc" in preload.lower():  # tcmalloc, jemalloc, mimalloc
    mine["LD_PRELOAD"] = preload
  return mine


def libc_version() -> str | None:
  """'glibc 2.36' and the like, or None (another C library, or not POSIX)."""
  try:
    return os.confstr("CS_GNU_LIBC_VERSION")
  except (AttributeError, ValueError, OSError):  # no confstr, or no such name (macOS, musl)
    return None


def tune_malloc() -> dict[str, Any]:
  """Sets glibc's allocator for a process that computes on the CPU (_MALLOC_SETTINGS: one
  arena, no mmap, freed memory kept), unless the user set their own; returns what config.json
  records. Call before any thread starts (M_ARENA_MAX binds threads that have not allocated
  yet): before JAX is imported. Once per process; later calls return the first one's record."""
  if _malloc:
    return dict(_malloc)
  mine = _users_allocator()
  libc = libc_version()
  if mine:
    record = {"source": "yours", "settings": mine}
  elif not libc or not libc.startswith("glibc"):
    record = {"source": "default", "why": "not glibc's malloc"}
  elif not computes_on_cpu():
    record = {"source": "default", "why": "JAX computes on an accelerator"}
  else:
    import ctypes  # pylint: disable=g-import-not-at-top

    mallopt = ctypes.CDLL(None).mallopt
    done = {name: value for name, number, value in _MALLOC_SETTINGS if mallopt(number, value) == 1}
    record = {"source": "nkd", "settings": done}
  _malloc.update(record, libc=libc or "unknown")
  return dict(_malloc)


def mend_compilation_cache(path: str | None) -> None:
  """Gives every cache entry without its access-time file one (the oldest time): a process
  killed between JAX's two writes leaves such an entry, and jax 0.10's eviction then fails every
  later write (jax-ml/jax#39880)."""
  if not path or not os.path.isdir(path):
    return
  for name in os.listdir(path):
    if name.endswith("-cache"):
      atime = os.path.join(path, name[: -len("-cache")] + "-atime")
      if not os.path.exists(atime):
        try:
          with open(atime, "xb") as f:
            f.write(bytes(8))
        except OSError:  # written meanwhile by its own process, or a read-only cache
          pass


# What pin_cpu did in this process (recorded by describe()).
_pinned: dict[str, Any] = {}


def _flags(xla_flags: str) -> dict[str, str]:
  """XLA_FLAGS as {flag: value}; the last occurrence wins, as in XLA."""
  return {m.group(1): m.group(2) for m in re.finditer(r"(--[\w.]+)(?:=(\S*))?", xla_flags)}


def _set_flags(xla_flags: str, updates: dict[str, str | None]) -> str:
  """XLA_FLAGS with each flag in `updates` removed, then appended unless its value is None."""
  kept = xla_flags
  for flag in updates:
    kept = re.sub(rf"(^|\s){re.escape(flag)}(=\S*)?(?=\s|$)", " ", kept)
  added = [f"{flag}={value}" for flag, value in updates.items() if value is not None]
  return " ".join([*kept.split(), *added])


def _backend_started() -> bool:
  import sys  # pylint: disable=g-import-not-at-top

  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False


def known_xla_flags(names) -> set[str]:
  """Which of the XLA flags `names` the installed jaxlib knows: XLA aborts the process on an
  unknown one, and flags come and go between versions. Read off the library once and cached
  in the temporary folder, keyed by its size and time."""
  spec = importlib.util.find_spec("jaxlib")
  libs = sorted(
      glob.glob(os.path.join(os.path.dirname(spec.origin), "*.so")) if spec and spec.origin else [],
      key=os.path.getsize,
      reverse=True,
  )
  if not libs:
    return set()
  stat = os.stat(libs[0])
  cache = os.path.join(
      tempfile.gettempdir(), f"nkd-xla-flags-{stat.st_size}-{int(stat.st_mtime)}.json"
  )
  try:
    with open(cache) as f:
      known = json.load(f)
  except (OSError, ValueError):
    known = {}
  missing = [name for name in names if name not in known]
  if missing:
    with open(libs[0], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      known.update({name: data.find(name.lstrip("-").encode() + b"\0") >= 0 for name in missing})
    try:
      with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(cache), delete=False) as f:
        json.dump(known, f)
      os.replace(f.name, cache)
    except OSError:
      pass
  return {name for name in names if known[name]}


def computes_on_cpu() -> bool:
  """Whether JAX will compute on the CPU in this process, decided before it starts: the first
  platform JAX_PLATFORMS names, else whether an accelerator plugin (CUDA, ROCm, TPU) is
  installed. A GPU machine whose plugin fails to load computes on its CPU without the CPU's
  opt-level pin: config.json records the settings either way."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  if importlib.util.find_spec("libtpu") is not None:
    return False
  try:
    spec = importlib.util.find_spec("jax_plugins")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and any(
      os.path.isdir(os.path.join(path, name)) and not name.startswith(("_", "."))
      for path in spec.submodule_search_locations or ()
      for name in os.listdir(path)
  ):
    return False
  try:
    return not importlib.metadata.entry_points(group="jax_plugins")
  except Exception:  # pylint: disable=broad-except  (broken metadata: assume the CPU)
    return True


def cpu_settings(isa: str) -> dict[str, dict[str, str]]:
  """The settings `pin_cpu(isa)` makes on an x86 CPU: {'xla_flags': {flag: value}, 'env':
  {variable: value}}."""
  if isa != NATIVE and isa not in CPU_ISAS:
    raise ValueError(f"unknown CPU ISA {isa!r}; expected {NATIVE} or one of {CPU_ISAS}")
  flags = {
      name: value
      for name, value in _FIXED_FLAGS.items()
      if name in known_xla_flags(tuple(_FIXED_FLAGS))
  }
  if computes_on_cpu():
    flags[OPT_LEVEL_FLAG] = CPU_OPT_LEVEL
  env = {CONTRACTION_ENV: "false"}
  if isa != NATIVE:
    flags[MAX_ISA_FLAG] = isa
    env[ONEDNN_ENV] = _ONEDNN_ISA[isa]
  return {"xla_flags": flags, "env": env}


def pin_cpu(isa: str = DEFAULT_CPU_ISA) -> list[str]:
  """Makes the settings of `cpu_settings(isa)` in XLA_FLAGS and the environment (on x86),
  leaving every one the user made. Returns one line per setting of the user's that changes
  XLA:CPU's numerics (they are recorded by describe()). Call before JAX's first computation."""
  settings = cpu_settings(isa) if is_x86() else {"xla_flags": {}, "env": {}}
  ours = json.loads(os.environ.get(_MARK, "{}"))  # what an nkd parent process set
  xla_flags = os.environ.get("XLA_FLAGS", "")
  present = _flags(xla_flags)
  record, notes, flag_updates, ours_now = {}, [], {}, {}

  def users(name, value, wanted):
    record[name] = {"value": value, "source": "yours"}
    if wanted is None or value != wanted:
      instead = f" (nkd would set {wanted!r})" if wanted is not None else ""
      notes.append(
          f"your setting {name}={value} is used{instead}: it can change XLA:CPU's "
          f"numerics, so params_sha256 may differ from runs without it (recorded in "
          f"config.json)"
      )

  for name in sorted({*settings["xla_flags"], *_WATCHED_FLAGS, MAX_ISA_FLAG}):
    wanted = settings["xla_flags"].get(name)
    if name in present and ours.get(name) != present[name]:
      users(name, present[name], wanted)
    else:
      flag_updates[name] = wanted
      if wanted is not None:
        record[name] = {"value": wanted, "source": "nkd"}
        ours_now[name] = wanted
  new_flags = _set_flags(xla_flags, flag_updates)
  for name in sorted({*settings["env"], ONEDNN_ENV, CONTRACTION_ENV, *_WATCHED_ENV}):
    wanted, value = settings["env"].get(name), os.environ.get(name)
    if value is not None and ours.get(name) != value:
      users(name, value, wanted)
    elif wanted is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = wanted
      record[name] = {"value": wanted, "source": "nkd"}
      ours_now[name] = wanted
  if new_flags:
    os.environ["XLA_FLAGS"] = new_flags
  else:
    os.environ.pop("XLA_FLAGS", None)
  if ours_now:
    os.environ[_MARK] = json.dumps(ours_now, sort_keys=True)
  else:
    os.environ.pop(_MARK, None)
  if not _backend_started():
    _pinned.clear()
    _pinned.update(
        isa=record.get(MAX_ISA_FLAG, {}).get("value", NATIVE).upper(),
        isa_source=(
            "XLA_FLAGS"
            if record.get(MAX_ISA_FLAG, {}).get("source") == "yours"
            else "--cpu_isa"
            if is_x86()
            else f"native ({platform.machine()}: --cpu_isa names x86 sets)"
        ),
        settings=record,
    )
  elif not _pinned:
    # JAX started before this call (a library user, a test): the settings as they were then
    # are what it computes with; the changes above reach child processes only.
    _pinned.update(
        isa=(present.get(MAX_ISA_FLAG) or NATIVE).upper(),
        isa_source="XLA_FLAGS when JAX started (before nkd could pin --cpu_isa)",
        settings={},
    )
  return notes


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
      flags = next(
          (set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set()
      )
  except OSError:
    return []
  return [isa for isa in CPU_ISAS if _CPUINFO_FLAGS[isa] <= flags]


def cache_sizes() -> str:
  """The CPU's data caches, e.g. 'L1d 48K, L2 1024K, L3 32768K' (Linux sysfs; '' if unknown).
  Eigen sizes the blocks of its matrix products by them (the L1d size sets the depth)."""
  found = []
  for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
    try:
      level, kind, size = (
          open(os.path.join(index, name)).read().strip() for name in ("level", "type", "size")
      )
    except OSError:
      continue
    if kind != "Instruction":
      found.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
  return ", ".join(found)


def usable_cores() -> int:
  """Cores this process may run on (XLA:CPU sizes its thread pools by them)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def package_versions() -> dict[str, str]:
  versions = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "none"
  return versions


def describe() -> dict[str, Any]:
  """The host facts and settings a CPU result depends on, for config.json; `fingerprint` is a
  short hash of them (what a pinned hash in the tests is keyed to)."""
  from nkd import cpu_kernels  # pylint: disable=g-import-not-at-top  (it imports this module)

  isa, source, settings = _isa_in_effect()
  supported = host_isas()
  facts = {
      "model": cpu_model(),
      "machine": platform.machine(),
      "isa": isa,
      "isa_source": source,
      "host_isa": supported[-1] if supported else "unknown",
      "cores": usable_cores(),
      "cpu_count": os.cpu_count(),
      "caches": cache_sizes(),
      "settings": settings,
      "kernels": cpu_kernels.status(),
  }
  # Speed only, so outside the fingerprint.
  malloc = dict(_malloc) or {"source": "default", "why": "not set by this process"}
  return {**facts, "malloc": malloc, "fingerprint": fingerprint(facts)}


def _isa_in_effect() -> tuple[str, str, dict[str, Any]]:
  """(the ISA XLA:CPU compiles for, where that came from, the settings pin_cpu recorded)."""
  if _pinned:
    return _pinned["isa"], _pinned["isa_source"], _pinned["settings"]
  present = _flags(os.environ.get("XLA_FLAGS", "")).get(MAX_ISA_FLAG)
  return (present.upper(), "XLA_FLAGS", {}) if present else (NATIVE, "default", {})


def describe_isa() -> str:
  """The ISA XLA:CPU compiles for in this process: one of CPU_ISAS, or 'NATIVE'."""
  return _isa_in_effect()[0].upper()


def fingerprint(facts: dict[str, Any] | None = None) -> str:
  """16 hex digits over what CPU bits depend on: CPU model, caches, usable cores, the host's
  newest ISA, the settings in effect, the package versions."""
  facts = facts or describe()
  keyed = {
      key: facts[key]
      for key in ("model", "caches", "cores", "host_isa", "isa", "settings", "kernels")
  }
  text = json.dumps({**keyed, "versions": package_versions()}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]
