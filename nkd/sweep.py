"""Grid sweeps: many `nkd.main` runs from one flagfile, several at once on one machine.

  python -m nkd.sweep --flagfile=experiments/softrand.flags \\
      --grid=seed=0,10,20,30,40 --grid=input_noise_sigma=0.05,0.1,0.2 \\
      [--parallel=N] [--workspace=DIR] [--name=NAME] [-- EXTRA FLAGS FOR EVERY RUN]

or `nkd-sweep ...`. Its options (below) go before `--`, the flags for every run after it.

The grid is the cartesian product of every --grid (the first --grid varies slowest). Each point
is one `python -m nkd.main` process:

  python -m nkd.main --flagfile=F [EXTRA FLAGS] --KEY=VALUE ... --workspace=W \\
      --workdir=W/sweeps/NAME/KEY=VALUE,KEY=VALUE

so a grid value overrides the flagfile. NAME is --name, or the flagfile's stem. Values are
written in a stable form (floats as Python's shortest repr: 0.05, 0.1, 0.0; ints as digits;
booleans true/false), so `--grid=input_noise_sigma=0.10` and `=0.1` name the same run folder;
characters other than letters, digits and `._-+:@` are %-escaped in folder names. A list-valued
option (lr_milestones, teacher_flags) takes `:` between the elements of one value:
`--grid=lr_milestones=60:120:160,75:150:200`.

Every run writes its output to `<workdir>/log.txt` (appended to on a rerun). A run whose
results.json is present (and whose config.json matches) is skipped; a partial run is simply
started again and resumes from its last checkpoint; a run that fails is reported with its exit
code and the last line of its log, and the others go on. At the end a table (run, status
ok/failed/skipped, test accuracy, wall time) is printed and WORKSPACE/sweeps/NAME/sweep.json
written. The exit status is 0 if no run failed, 1 if one did, 2 for bad input (one line
`nkd.sweep: error: ...`). Distillation runs of one sweep share their teachers: each (each
--teacher_seeds candidate too) is trained once, under its own file lock, by the first run that
needs it, while the others train another candidate or wait for it.

Several runs at once (--parallel=N) share one GPU well (4 on one H200 gave 2.2x the throughput
of one). N is refused when a conservative per-run estimate (data, activations at --batch_size, a
teacher trained in the same process, overhead; x1.5) does not fit: on a GPU, into each run's
XLA_PYTHON_CLIENT_MEM_FRACTION of the memory JAX reports (memory_stats()['bytes_limit'], asked
in a child process so the sweep itself holds no GPU memory), with the fractions summing to at
most 1; on a CPU, N estimates into MemAvailable. On a CPU, --parallel mostly trades one run's
speed for another's: each JAX process already uses every core. On a TPU only one process can
hold the chips: use --parallel=1.

The options are absl flags (`--parallel 4` and `--parallel=4` alike; `--nolist` etc.), parsed
into a FlagValues of the sweep's own, which leaves --flagfile to the runs. A grid value is
converted to its option's type and turned back into flags by the config (`Config.to_flags`), as
every other writer of nkd.main flags does.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
from typing import Any, Sequence

from absl import flags

from nkd import cli
from nkd import config as config_lib
from nkd import pipeline
from nkd import results as run_files
from nkd.config import fields as fields_lib
from nkd.config import parse_model_name
from nkd.errors import ConfigError, NkdError
from nkd.fileio import last_log_line, write_json

PROG = "nkd.sweep"
SWEEP_JSON = "sweep.json"
LOG = "log.txt"
# Options the sweep sets itself for every run.
RESERVED = ("workdir", "workspace", "name")
_SAFE_CHARS = "._-+:@"
_MAX_NAME = 200  # bytes of a run folder's name before it is shortened with a hash
GIB = 1 << 30


class SweepError(NkdError):
  """Bad input to the sweep: one line, exit 2."""


# ---------------------------------------------------------------------------------------------
# The grid.

_FIELDS = config_lib.Config.fields_by_name()
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_value(key: str, text: str) -> Any:
  """A grid value as option `key`'s type (':' separates a list's elements). Text that does not
  parse is kept as typed: the run then fails with nkd.main's own message."""
  field = _FIELDS[key]
  default = field.default
  try:
    if isinstance(default, bool):
      return _BOOL_WORDS.get(text.strip().lower(), text)
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      parts = text.split(":")
      try:
        return fields_lib.from_value(field, parts)
      except ConfigError:
        return tuple(parts)
  except ValueError:
    return text
  return text


def value_text(value: Any) -> str:
  """The stable text of a grid value (run folder names, --list, sweep.json): true/false, a
  float as Python's shortest repr, ':' between a list's elements."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return ":".join(map(str, value))
  return str(value)


def point_flags(point: dict[str, Any]) -> list[str]:
  """The nkd.main flags that set the options of `point` ({option: value}), in its order."""
  return config_lib.Config(**point).to_flags(list(point))


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
  """['seed=0,10', 'lr=0.1'] -> [('seed', [0, 10]), ('lr', [0.1])]: values typed (`parse_value`)."""
  if not specs:
    raise SweepError("no --grid given: name at least one option and its values, e.g. "
                     "--grid=seed=0,10,20")
  options = config_lib.option_names()
  grid, seen = [], set()
  for spec in specs:
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key:
      raise SweepError(f"malformed --grid={spec!r}: expected KEY=V1,V2,... (e.g. "
                       f"--grid=seed=0,10,20)")
    if key not in options:
      close = difflib.get_close_matches(key, options, n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      raise SweepError(f"--grid={spec}: {key!r} is not an option of nkd.main{hint}")
    if key in RESERVED:
      raise SweepError(f"--grid={spec}: --{key} is set by the sweep for every run"
                       + (" (use nkd.sweep's --workspace)" if key == "workspace" else ""))
    if key in seen:
      raise SweepError(f"--grid={spec}: {key} appears in more than one --grid")
    seen.add(key)
    if not values.strip():
      raise SweepError(f"--grid={spec}: empty value list for {key}")
    raw = values.split(",")
    if any(not v.strip() for v in raw):
      raise SweepError(f"--grid={spec}: empty value in the list for {key}")
    typed = [parse_value(key, v.strip()) for v in raw]
    texts = [value_text(v) for v in typed]
    duplicates = sorted({t for t in texts if texts.count(t) > 1})
    if duplicates:
      raise SweepError(f"--grid={spec}: {key} lists the value {duplicates[0]} more than once")
    grid.append((key, typed))
  return grid


def point_name(point: Sequence[tuple[str, str]]) -> str:
  """The run folder of a grid point: 'seed=0,input_noise_sigma=0.05' (escaped, bounded)."""
  name = ",".join(f"{k}={urllib.parse.quote(v, safe=_SAFE_CHARS)}" for k, v in point)
  if len(name.encode()) > _MAX_NAME:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    name = name.encode()[:_MAX_NAME - 13].decode(errors="ignore") + "-" + digest
  return name


@dataclasses.dataclass
class Run:
  """One grid point: its flags, folder, command and, once run, its outcome."""

  index: int
  name: str
  overrides: dict[str, str]  # option -> value text
  flags: list[str]  # nkd.main flags after --flagfile: extras, grid values, workspace, workdir
  workdir: str
  command: list[str]
  status: str = "pending"  # ok / failed / skipped / interrupted
  exit_code: int | None = None
  wall_time_s: float | None = None
  test_accuracy: float | None = None
  params_sha256: str | None = None
  last_log_line: str = ""

  def summary(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["command"] = shlex.join(self.command)
    return out


def expand(flagfile: str, grid, extra_flags: Sequence[str], workspace: str,
           sweep_name: str, python: str = sys.executable) -> list[Run]:
  """Every grid point as a Run, in --list order."""
  keys = [k for k, _ in grid]
  runs = []
  for index, values in enumerate(itertools.product(*(v for _, v in grid))):
    texts = [(k, value_text(v)) for k, v in zip(keys, values)]
    name = point_name(texts)
    workdir = os.path.join(workspace, "sweeps", sweep_name, name)
    flags_ = [*extra_flags,
              *point_flags({**dict(zip(keys, values)), "workspace": workspace,
                            "workdir": workdir})]
    runs.append(Run(index=index, name=name, overrides=dict(texts), flags=flags_,
                    workdir=workdir,
                    command=[python, "-m", "nkd.main", f"--flagfile={flagfile}", *flags_]))
  return runs


# ---------------------------------------------------------------------------------------------
# The state of a run folder.

def run_config(flagfile: str, run: Run):
  """The run's resolved Config, or None where nkd.main would refuse it (it then fails there)."""
  try:
    return config_lib.parse_flagfile(flagfile, run.flags)
  except NkdError:
    return None


def run_state(flagfile: str, run: Run) -> str:
  """'finished' (results.json, same config), 'partial' (started), 'new', or 'other' (the folder
  holds a finished run of another config: nkd.main will refuse it)."""
  results = os.path.join(run.workdir, run_files.RESULTS)
  stored = os.path.join(run.workdir, run_files.CONFIG)
  if not os.path.exists(stored):
    return "new"
  if not os.path.exists(results):
    return "partial"
  config = run_config(flagfile, run)
  if config is None:
    return "other"
  try:
    theirs = run_files.read_json(stored).get("options", {})
  except NkdError:
    return "other"
  return "other" if config.differing_options(theirs) else "finished"


def _read_results(run: Run) -> None:
  try:
    results = run_files.read_results(run.workdir)
  except (OSError, NkdError):
    return
  run.test_accuracy, run.params_sha256 = results.test_accuracy, results.params_sha256
  if run.status == "skipped":
    run.wall_time_s = results.wall_time_s


# ---------------------------------------------------------------------------------------------
# Memory: how many runs fit at once.

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
  probe_env = {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
               "XLA_PYTHON_CLIENT_MEM_FRACTION": "1.0"}
  try:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=probe_env, capture_output=True,
                         text=True, timeout=300)
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
  n_images = (config.synthetic_train_size + config.synthetic_test_size
              if config.dataset == "synthetic" else 60000)
  if config.train_subset:
    n_images = min(n_images, config.train_subset + 10000)
  data = n_images * (32 * 32 * 3 + 4)

  def training(model, batch):
    return 2 * 4 * batch * _activation_elements(model)

  def evaluating(model, batch):
    return 3 * 4 * batch * 32 * 32 * 16 * parse_model_name(model)[1]

  work = max(training(config.model, config.batch_size),
             evaluating(config.model, config.eval_batch_size))
  if config.mode == "kd" and config.teacher_flagfile:
    try:
      teacher = pipeline.teacher_config(config)
      work = max(work, training(teacher.model, teacher.batch_size),
                 evaluating(teacher.model, config.batch_size) + training(config.model,
                                                                         config.batch_size))
    except NkdError:
      pass
  if platform == "cpu":
    total = GIB + 3 * data + work  # host copy, device copy, and loading
  else:
    total = GIB + data + work
  return int(1.5 * total)


def check_parallel(parallel: int, configs: Sequence[Any], env: dict[str, str],
                   mem_per_run_gb: float | None) -> str:
  """Raises SweepError if `parallel` runs do not fit; returns a one-line account."""
  if mem_per_run_gb == 0:
    return "memory check skipped (--mem_per_run_gb=0)"
  device = probe_device(env)
  platform = device["platform"]
  if platform == "tpu" and parallel > 1:
    raise SweepError(f"--parallel={parallel}: a TPU is held by one process at a time; use "
                     f"--parallel=1")
  if mem_per_run_gb is not None:
    per_run = int(mem_per_run_gb * GIB)
  else:
    per_run = max([estimate_run_bytes(c, platform) for c in configs if c is not None],
                  default=2 * GIB)
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
      raise SweepError(f"--parallel={parallel} runs with XLA_PYTHON_CLIENT_MEM_FRACTION="
                       f"{fraction:g} each would need {parallel * fraction:.0%} of the "
                       f"{device.get('kind', platform)}; lower --mem_fraction")
    available = int(parallel * fraction * limit)
    where = (f"{parallel} x {fraction:.3g} of the {device.get('kind', platform)}'s "
             f"{limit / GIB:.0f} GiB")
  account = (f"{parallel} x {per_run / GIB:.1f} GiB estimated per run vs {available / GIB:.1f} "
             f"GiB: {where}")
  if parallel * per_run > available:
    if platform == "cpu":
      most = max(1, available // per_run)
      advice = f"use --parallel={most} or less"
    else:
      most = max(1, int(0.9 * limit) // per_run)
      advice = (f"use --parallel={most} or less (each with --mem_fraction {0.9 / most:.3g}, "
                f"the default)")
    raise SweepError(f"--parallel={parallel} does not fit: {account}; {advice} (or "
                     f"--mem_per_run_gb to override the estimate)")
  return account


# ---------------------------------------------------------------------------------------------
# Running.

def child_env(args, parallel: int) -> dict[str, str]:
  env = dict(os.environ)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
  env["PYTHONUNBUFFERED"] = "1"
  if args.mem_fraction is not None:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{args.mem_fraction:.3f}"
  elif parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / parallel:.3f}"
  if args.no_preallocate:
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if args.compile_cache:
    env["JAX_COMPILATION_CACHE_DIR"] = args.compile_cache
  return env


class _Stop(Exception):
  def __init__(self, signum):
    super().__init__(signum)
    self.signum = signum


def execute(runs: Sequence[Run], parallel: int, env: dict[str, str], flagfile: str,
            total: int) -> None:
  """Runs `runs`, `parallel` at a time; fills in each one's outcome. Finished runs are
  skipped; on SIGTERM/SIGINT the running children are stopped (they resume on a rerun)."""
  pending = []
  for run in runs:
    if run_state(flagfile, run) == "finished":
      run.status = "skipped"
      _read_results(run)
      _say(f"skip   [{run.index + 1}/{total}] {run.name}: finished before")
    else:
      pending.append(run)
  active: dict[subprocess.Popen, tuple[Run, float, Any]] = {}

  def on_signal(signum, frame):  # pylint: disable=unused-argument
    raise _Stop(signum)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while pending or active:
      while pending and len(active) < parallel:
        run = pending.pop(0)
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(run.workdir, LOG), "a")
        log.write(f"=== nkd.sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{shlex.join(run.command)}\n")
        log.flush()
        proc = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
        active[proc] = (run, time.time(), log)
        _say(f"start  [{run.index + 1}/{total}] {run.name} (pid {proc.pid})")
      time.sleep(0.1)
      for proc in [p for p in active if p.poll() is not None]:
        run, start, log = active.pop(proc)
        log.close()
        _finish(run, proc.returncode, time.time() - start)
        _say(f"{run.status:<6} [{run.index + 1}/{total}] {run.name}: " +
             (f"test acc {run.test_accuracy:.2f}%, {run.wall_time_s:.0f}s"
              if run.status == "ok" else f"exit {run.exit_code}: {run.last_log_line}"))
  except _Stop as stop:
    for proc in active:
      proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 30
    for proc, (run, start, log) in active.items():
      try:
        proc.wait(timeout=max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      log.close()
      run.status, run.exit_code = "interrupted", proc.returncode
      run.wall_time_s = time.time() - start
      run.last_log_line = last_log_line(os.path.join(run.workdir, LOG))
    raise stop
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _finish(run: Run, returncode: int, seconds: float) -> None:
  run.exit_code, run.wall_time_s = returncode, round(seconds, 3)
  results = os.path.join(run.workdir, run_files.RESULTS)
  run.status = "ok" if returncode == 0 and os.path.exists(results) else "failed"
  run.last_log_line = last_log_line(os.path.join(run.workdir, LOG))
  _read_results(run)


def _say(message: str) -> None:
  print(f"[{PROG}] {message}", flush=True)


def format_table(runs: Sequence[Run]) -> str:
  width = max([len("run")] + [len(r.name) for r in runs])
  header = f"{'#':>3}  {'run':<{width}}  {'status':<11} {'test acc':>8} {'time':>8}"
  lines = [header, "-" * len(header)]
  for r in runs:
    acc = f"{r.test_accuracy:.2f}%" if r.test_accuracy is not None else "-"
    secs = f"{r.wall_time_s:.0f}s" if r.wall_time_s is not None else "-"
    line = f"{r.index:>3}  {r.name:<{width}}  {r.status:<11} {acc:>8} {secs:>8}"
    if r.status in ("failed", "interrupted"):
      line += f"  exit {r.exit_code}: {r.last_log_line[:160]}"
    lines.append(line)
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line.

class _SweepFlagValues(flags.FlagValues):
  """absl flags that leave --flagfile alone: the sweep's --flagfile is nkd.main's experiment,
  passed on to every run, not a file of the sweep's own flags."""

  def read_flags_from_files(self, argv, force_gnu=True):
    del force_gnu  # nothing is read
    return list(argv)


# --help's areas.
SECTIONS = (("the grid", ("flagfile", "grid", "name", "workspace")),
            ("running", ("parallel", "task_index", "list", "count")),
            ("memory and compilation", ("mem_fraction", "no_preallocate", "mem_per_run_gb",
                                        "compile_cache")))


def _flag_values() -> flags.FlagValues:
  fv = _SweepFlagValues()
  for define, name, default, help_text in (
      (flags.DEFINE_string, "flagfile", None, "The experiment: an nkd.main flagfile (required)."),
      (flags.DEFINE_multi_string, "grid", [], "KEY=V1,V2,...: an option of nkd.main and its "
       "values (repeatable, at least one; ':' between the elements of a list value)."),
      (flags.DEFINE_integer, "parallel", 1, "Runs at once. Refused where they do not fit in "
       "memory (see above)."),
      (flags.DEFINE_string, "workspace", None, "Passed to every run; default: the flagfile's."),
      (flags.DEFINE_string, "name", None, "The sweep's folder under WORKSPACE/sweeps; default: "
       "the flagfile's stem."),
      (flags.DEFINE_float, "mem_fraction", None, "XLA_PYTHON_CLIENT_MEM_FRACTION of each run; "
       "default: 0.9/N with --parallel=N > 1. Not set where the variable is set already; N runs "
       "split 90% of the GPU."),
      (flags.DEFINE_bool, "no_preallocate", False, "XLA_PYTHON_CLIENT_PREALLOCATE=false in "
       "each run. Memory is taken as needed instead of the whole fraction at start (less "
       "fragmentation-proof, but lets runs of different sizes share a GPU)."),
      (flags.DEFINE_float, "mem_per_run_gb", None, "Replaces the per-run memory estimate of "
       "the --parallel check (0: no check)."),
      (flags.DEFINE_string, "compile_cache", None, "JAX_COMPILATION_CACHE_DIR of each run: runs "
       "of one shape compile once."),
      (flags.DEFINE_bool, "list", False, "Print each point's index, state and command; run "
       "nothing."),
      (flags.DEFINE_bool, "count", False, "Print the number of points; run nothing."),
      (flags.DEFINE_integer, "task_index", None, "Run only point I (0-based, the order of "
       "--list), e.g. one SLURM array task (launch/slurm_sweep.sh). Writes no sweep.json."),
  ):
    define(name, default, help_text, flag_values=fv, module_name=PROG)
  return fv


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Sweep options before the first '--', run flags after it."""
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


def parse_flags(own: Sequence[str]) -> flags.FlagValues:
  """The sweep's own flags (the command line before '--'), checked."""
  fv = _flag_values()
  try:
    rest = fv([PROG, *own])[1:]
  except flags.UnrecognizedFlagError as e:
    close = difflib.get_close_matches(e.flagname, list(fv), n=1)
    hint = f"did you mean --{close[0]}? " if close else ""
    raise SweepError(f"unrecognized arguments {e.flagvalue} ({hint}flags for the runs go "
                     f"after '--')") from None
  except flags.Error as e:
    raise SweepError(str(e)) from None
  if rest:
    raise SweepError(f"unexpected arguments {' '.join(rest)} (flags for the runs go after "
                     f"'--')")
  if not fv.flagfile:
    raise SweepError("--flagfile is required: the experiment's nkd.main flagfile")
  modes = [f"--{n}" for n in ("list", "count") if fv[n].value]
  modes += ["--task_index"] if fv.task_index is not None else []
  if len(modes) > 1:
    raise SweepError(f"{modes[1]} is not allowed with {modes[0]}")
  if fv.parallel < 1:
    raise SweepError(f"--parallel={fv.parallel}: expected at least 1")
  if fv.mem_fraction is not None and not 0 < fv.mem_fraction <= 1:
    raise SweepError(f"--mem_fraction={fv.mem_fraction}: expected a fraction in (0, 1]")
  if fv.mem_per_run_gb is not None and fv.mem_per_run_gb < 0:
    raise SweepError(f"--mem_per_run_gb={fv.mem_per_run_gb}: expected >= 0")
  return fv


def _check_extra_flags(extra: Sequence[str], grid) -> None:
  keys = {k for k, _ in grid}
  for flag in extra:
    if not flag.startswith("--"):
      raise SweepError(f"extra flag {flag!r} after '--': expected --FLAG=VALUE")
    name = flag[2:].split("=", 1)[0]
    bare = name[2:] if name.startswith("no") and name[2:] in config_lib.option_names() else name
    if bare in RESERVED:
      raise SweepError(f"extra flag {flag}: --{bare} is set by the sweep"
                       + (" (use nkd.sweep's --workspace, before '--')"
                          if bare == "workspace" else ""))
    if bare in keys:
      raise SweepError(f"extra flag {flag}: {bare} is also a --grid key")


def prepare(argv: Sequence[str]):
  """Parses and checks the command line; returns (flags, grid, extra flags, workspace, sweep
  name, runs)."""
  own, extra = split_argv(argv)
  args = parse_flags(own)
  grid = parse_grid(args.grid)
  _check_extra_flags(extra, grid)
  if not os.path.isfile(args.flagfile):
    raise SweepError(f"--flagfile={args.flagfile}: no such file")
  try:
    base = config_lib.parse_flagfile(args.flagfile, extra)
  except NkdError as e:
    raise SweepError(f"the flagfile and extra flags do not make a valid run: {e}") from None
  workspace = args.workspace or base.workspace
  name = args.name or os.path.splitext(os.path.basename(args.flagfile))[0]
  if not name or "/" in name or name in (".", ".."):
    raise SweepError(f"--name={name!r}: expected a folder name")
  runs = expand(args.flagfile, grid, extra, workspace, name)
  if args.task_index is not None and not 0 <= args.task_index < len(runs):
    raise SweepError(f"--task_index={args.task_index}: the grid has {len(runs)} points "
                     f"(0..{len(runs) - 1})")
  return args, grid, extra, workspace, name, runs


def main(argv: Sequence[str] | None = None) -> int:
  """The sweep for `argv` (the command line without the program name; default: sys.argv's);
  the exit status. Also the console script `nkd-sweep`."""
  argv = sys.argv[1:] if argv is None else argv
  request = cli.help_request(argv)
  if request:
    cli.print_help(cli.help_text(__doc__, _flag_values(), SECTIONS, full=request == "full"))
    return 0
  try:
    args, grid, extra, workspace, name, runs = prepare(argv)
    if args.count:
      print(len(runs))
      return 0
    if args.list:
      width = max(len(r.name) for r in runs)
      for r in runs:
        print(f"{r.index:>3}  {run_state(args.flagfile, r):<8}  {r.name:<{width}}  "
              f"{shlex.join(r.command)}")
      return 0
    selected = runs if args.task_index is None else [runs[args.task_index]]
    parallel = min(args.parallel, len(selected))
    env = child_env(args, parallel)
    if parallel > 1:
      configs = [run_config(args.flagfile, r) for r in selected]
      _say(check_parallel(parallel, configs, env, args.mem_per_run_gb))
  except SweepError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2

  sweep_dir = os.path.join(workspace, "sweeps", name)
  started = time.time()
  _say(f"{len(selected)} run(s) of {args.flagfile} in {sweep_dir}, {parallel} at a time")
  interrupted = None
  try:
    execute(selected, parallel, env, args.flagfile, len(runs))
  except _Stop as stop:
    interrupted = stop.signum
  print(format_table(selected), flush=True)
  failed = [r for r in selected if r.status in ("failed", "interrupted")]
  if args.task_index is None:
    write_json(os.path.join(sweep_dir, SWEEP_JSON), {
        "flagfile": args.flagfile, "name": name, "workspace": workspace,
        "grid": [[k, [value_text(v) for v in values]] for k, values in grid],
        "extra_flags": list(extra), "parallel": parallel,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_time_s": round(time.time() - started, 3),
        "interrupted": interrupted is not None,
        "counts": {s: sum(r.status == s for r in selected)
                   for s in ("ok", "skipped", "failed", "interrupted")},
        "runs": [r.summary() for r in selected]})
  if interrupted is not None:
    _say("interrupted: rerun the same command to resume")
    return 128 + interrupted
  if failed:
    _say(f"{len(failed)} of {len(selected)} run(s) failed (logs: <workdir>/{LOG})")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
