"""Reliability: the CPU instruction-set pin, preemption, damaged checkpoints, one writer per run
folder and a full disk. Each fault ends in one line and either the uninterrupted run's
params_sha256 or the previous good files. (The demo's pinned hash: tests/test_demo.py.)"""

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import REPO, run_cli, tiny_flags
from nkd import runtime

# Two epochs of 32 steps: checkpoints at steps 32 and 64.
FLAGS = tiny_flags(synthetic_train_size=1024, epochs=2, keep_checkpoints=5)
STEPS = 64


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _args(workdir, *extra):
  return [*FLAGS, f"--workspace={workdir.parent}", f"--workdir={workdir}", *extra]


def _start(workdir, *extra):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen(
      [sys.executable, "-m", "nkd.main", *_args(workdir, *extra)],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _wait_for_line(proc, pattern, timeout=300):
  """Reads proc's stderr until a line matches; returns the lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stderr.readline()
    if not line:
      break
    lines.append(line)
    if re.search(pattern, line):
      return lines
  raise AssertionError(f"no line matching {pattern!r}:\n{''.join(lines[-20:])}")


def _error_lines(stderr, prefix="nkd: "):
  return [line for line in stderr.splitlines() if line.startswith(prefix)]


def test_pin_cpu_sets_the_cpu_settings_and_keeps_the_users(monkeypatch):
  from nkd import runtime

  monkeypatch.setattr(runtime, "is_x86", lambda: True)
  monkeypatch.setattr(runtime, "computes_on_cpu", lambda: True)
  monkeypatch.setattr(runtime, "_backend_started", lambda: False)  # as in a fresh process
  monkeypatch.setattr(runtime, "_pinned", {})  # This process's record stays as it was.
  for name in (
      "XLA_FLAGS",
      "NKD_CPU_PINS",
      "ONEDNN_MAX_CPU_ISA",
      "DNNL_MAX_CPU_ISA",
      "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL",
  ):
    monkeypatch.delenv(name, raising=False)
  fixed = (
      "--xla_cpu_enable_platform_dependent_math=false --xla_cpu_experimental_ynn_fusion_type= "
      "--xla_backend_optimization_level=1"
  )
  assert runtime.pin_cpu("AVX2") == []
  assert sorted(os.environ["XLA_FLAGS"].split()) == sorted(
      f"{fixed} --xla_cpu_max_isa=AVX2".split()
  )
  assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
  assert os.environ["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] == "false"
  runtime.pin_cpu("AVX512")  # nkd's own settings (a sweep's child inherits them) are nkd's,
  assert "--xla_cpu_max_isa=AVX512" in os.environ["XLA_FLAGS"].split()
  assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"
  runtime.pin_cpu("native")  # to change and to take back,
  assert sorted(os.environ["XLA_FLAGS"].split()) == sorted(fixed.split())
  assert "ONEDNN_MAX_CPU_ISA" not in os.environ
  # while the user's own settings win, each named in one line and recorded.
  monkeypatch.setenv(
      "XLA_FLAGS", "--xla_cpu_max_isa=SSE4_2 --xla_foo=1 --xla_cpu_use_fusion_emitters=false"
  )
  monkeypatch.setenv("TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL", "true")
  monkeypatch.setattr(runtime, "_pinned", {})
  notes = runtime.pin_cpu("AVX2")
  assert len(notes) == 3 and "--xla_cpu_max_isa=SSE4_2" in notes[0] and "'AVX2'" in notes[0]
  assert "--xla_cpu_use_fusion_emitters=false" in notes[1] and "nkd would" not in notes[1]
  assert "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=true" in notes[2] and "'false'" in notes[2]
  flags = os.environ["XLA_FLAGS"].split()
  assert flags[:3] == [
      "--xla_cpu_max_isa=SSE4_2",
      "--xla_foo=1",
      "--xla_cpu_use_fusion_emitters=false",
  ]
  assert fixed.split()[0] in flags
  cpu = runtime.describe()
  assert cpu["isa"] == "SSE4_2" and cpu["isa_source"] == "XLA_FLAGS"
  assert cpu["settings"]["--xla_cpu_max_isa"] == {"value": "SSE4_2", "source": "yours"}
  assert cpu["settings"]["--xla_cpu_use_fusion_emitters"] == {"value": "false", "source": "yours"}
  assert cpu["settings"]["ONEDNN_MAX_CPU_ISA"] == {"value": "AVX2", "source": "nkd"}
  assert {"model", "host_isa", "cores", "caches", "fingerprint"} <= set(cpu)
  with pytest.raises(ValueError, match="unknown CPU ISA"):
    runtime.pin_cpu("AVX3")


def test_llvm_optimisation_level_is_pinned_only_where_the_cpu_computes(monkeypatch, tmp_path):
  """-O1 for XLA:CPU's generated code, but not in a process that computes on a GPU or TPU:
  XLA_FLAGS reach every backend, and there the flag sets the level of the GPU kernels' LLVM."""
  from nkd import runtime

  level = runtime.OPT_LEVEL_FLAG
  for platforms, on_cpu in (
      ("cpu", True),
      ("cpu,cuda", True),
      ("cuda", False),
      ("cuda,cpu", False),
  ):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert runtime.computes_on_cpu() is on_cpu, platforms
    assert (level in runtime.cpu_settings("AVX2")["xla_flags"]) is on_cpu, platforms
  # Without JAX_PLATFORMS: an installed accelerator plugin (jax_plugins/xla_cuda13 here) means
  # JAX will compute on it.
  monkeypatch.delenv("JAX_PLATFORMS")
  plugin = tmp_path / "site" / "jax_plugins" / "xla_cuda13"
  plugin.mkdir(parents=True)
  (plugin / "__init__.py").write_text("")
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  assert runtime.computes_on_cpu() is False
  assert level not in runtime.cpu_settings("AVX2")["xla_flags"]


def test_llvm_optimisation_level_is_named_and_recorded(monkeypatch):
  """LLVM's optimisation level changes the bits (-O0 gave another params_sha256): a user's
  setting of it is one line, and recorded as theirs."""
  from nkd import runtime

  monkeypatch.setattr(runtime, "_backend_started", lambda: False)
  monkeypatch.setattr(runtime, "_pinned", {})
  for name in ("NKD_CPU_PINS", "ONEDNN_MAX_CPU_ISA", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"):
    monkeypatch.delenv(name, raising=False)  # restored afterwards, as the settings pin_cpu makes
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  notes = runtime.pin_cpu("AVX2")
  assert [n for n in notes if "--xla_backend_optimization_level=0" in n], notes
  assert runtime.describe()["settings"]["--xla_backend_optimization_level"] == {
      "value": "0",
      "source": "yours",
  }


def test_an_unknown_xla_flag_is_never_set(monkeypatch):
  from nkd import runtime

  assert runtime.known_xla_flags(("--xla_cpu_max_isa", "--xla_no_such_flag_here")) == {
      "--xla_cpu_max_isa"
  }


_FAULTS_SCRIPT = """
import ctypes, json, resource, threading
from nkd import runtime
record = runtime.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def steps():  # as XLA:CPU's pool thread does: a fresh 96 MB buffer per step, written, freed
  for _ in range(8):
    p = libc.malloc(96 << 20); ctypes.memset(p, 1, 96 << 20); libc.free(p)
warm = threading.Thread(target=steps); warm.start(); warm.join()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
measured = threading.Thread(target=steps); measured.start(); measured.join()
print(json.dumps({"record": record, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(**env):
  theirs = runtime._users_allocator()  # this environment's own: the subprocesses go without
  base = {k: v for k, v in os.environ.items() if k not in theirs}
  out = subprocess.run(
      [sys.executable, "-c", _FAULTS_SCRIPT],
      cwd=REPO,
      env={**base, "JAX_PLATFORMS": "cpu", **env},
      capture_output=True,
      text=True,
      check=True,
  )
  return json.loads(out.stdout)


@pytest.mark.skipif(
    not (runtime.libc_version() or "").startswith("glibc"), reason="glibc's malloc only"
)
def test_the_allocator_keeps_each_steps_memory_and_a_users_setting_wins():
  """With nkd's allocator settings a thread's fresh large buffers reuse the memory of the last
  one (XLA:CPU's temporaries: page faults were 7-9 s of the demo's CPU); with a setting of the
  user's, nkd leaves malloc alone and records theirs; on an accelerator it leaves it too."""
  tuned = _faults()
  assert tuned["record"]["source"] == "nkd", tuned
  assert tuned["record"]["settings"] == {
      "M_ARENA_MAX": 1,
      "M_MMAP_MAX": 0,
      "M_TRIM_THRESHOLD": 2**31 - 1,
  }
  # MALLOC_TOP_PAD_ at glibc's default (128 KiB) changes nothing but is the user's.
  users = _faults(MALLOC_TOP_PAD_="131072")
  assert users["record"] == {
      "source": "yours",
      "settings": {"MALLOC_TOP_PAD_": "131072"},
      "libc": tuned["record"]["libc"],
  }
  # 8 fresh mappings of 96 MB: 24,576 faults each with 4 KiB pages, at least 48 where the
  # kernel's transparent huge pages are always on; reused memory: next to none.
  assert users["faults"] >= 8 * 48, users
  assert tuned["faults"] < 100 and tuned["faults"] * 3 < users["faults"], (tuned, users)
  on_gpu = _faults(JAX_PLATFORMS="cuda")
  assert on_gpu["record"]["source"] == "default" and "accelerator" in on_gpu["record"]["why"]


def test_a_users_allocator_or_tunables_are_recorded_as_theirs(monkeypatch):
  monkeypatch.setattr(runtime, "_malloc", {})
  for name in runtime._MALLOC_ENV:  # the test processes' own (conftest.py)
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libjemalloc.so.2")
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
  record = runtime.tune_malloc()
  assert record["source"] == "yours"
  assert record["settings"] == {
      "LD_PRELOAD": "/opt/lib/libjemalloc.so.2",
      "GLIBC_TUNABLES": "glibc.malloc.arena_max=4",
  }
  assert runtime.describe()["malloc"] == record
  monkeypatch.setenv("LD_PRELOAD", "")
  assert runtime.tune_malloc() == record  # once per process


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run; while it is paused mid-training, a second process on the same
  --workdir is refused. Returns (workdir, results, the second process)."""
  workdir = tmp_path_factory.mktemp("ref") / "run"
  first = _start(workdir)
  try:
    _wait_for_line(first, r"step 8/64")
    first.send_signal(signal.SIGSTOP)  # It holds the lock while stopped.
    second = run_cli(_args(workdir))
  finally:
    first.send_signal(signal.SIGCONT)
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  return workdir, _results(workdir), second, first.pid


def test_config_records_the_cpu_and_the_pinned_isa(reference):
  workdir, results, _, _ = reference
  config = json.load(open(workdir / "config.json"))
  cpu = config["cpu"]
  assert cpu["isa"] == "AVX2" and cpu["isa_source"] == "--cpu_isa"
  assert cpu["cores"] >= 1 and cpu["model"]
  assert "--xla_cpu_max_isa=AVX2" in config["xla_flags"]
  assert cpu["settings"]["ONEDNN_MAX_CPU_ISA"]["value"] == "AVX2"
  assert cpu["fingerprint"] == config["cpu"]["fingerprint"] and len(cpu["fingerprint"]) == 16
  assert config["options"]["cpu_isa"] == "AVX2"
  assert results["steps"] == STEPS
  malloc = cpu["malloc"]  # speed only: outside the fingerprint
  if (runtime.libc_version() or "").startswith("glibc") and not runtime._users_allocator():
    assert malloc["source"] == "nkd" and malloc["settings"]["M_ARENA_MAX"] == 1, malloc


def test_second_process_on_one_workdir_exits_2_naming_folder_and_holder(reference):
  workdir, _, second, first_pid = reference
  assert second.returncode == 2, second.stderr[-3000:]
  assert "Traceback" not in second.stderr
  (line,) = _error_lines(second.stderr, "nkd: error:")
  assert str(workdir) in line and f"process {first_pid}" in line and "in use" in line
  # The refused process trained nothing: one epoch record per epoch.
  assert [json.loads(l)["epoch"] for l in open(workdir / "metrics.jsonl")] == [1, 2]


def test_sigterm_mid_epoch_checkpoints_exits_75_and_resumes_bit_exactly(reference, tmp_path):
  _, expected, _, _ = reference
  workdir = tmp_path / "run"
  proc = _start(workdir)
  _wait_for_line(proc, r"step 40/64")
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, err[-3000:]
  assert "Traceback" not in err
  (line,) = _error_lines(err)
  step = int(re.search(r"stopped by SIGTERM at step (\d+)/64", line).group(1))
  assert 40 <= step < 64 and step % 32, line  # Mid-epoch, not at an epoch end.
  assert (workdir / "checkpoints" / str(step)).is_dir()
  assert not (workdir / "results.json").exists()

  resumed = run_cli(_args(workdir), check=True)
  assert f"from step {step} (epoch 2, step {step - 32} of it)" in resumed.stderr
  assert _results(workdir)["params_sha256"] == expected["params_sha256"]
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  reference_records = [json.loads(l) for l in open(reference[0] / "metrics.jsonl")]
  assert [r["epoch"] for r in records] == [1, 2]
  for ours, theirs in zip(records, reference_records):  # The same but for timings.
    for key in ("train_loss", "train_accuracy", "test_accuracy", "lr", "step"):
      assert ours[key] == theirs[key], key


def _copy_of_reference(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  os.remove(workdir / "results.json")  # Unfinished again: it resumes from its checkpoints.
  return workdir


def _truncate_largest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def test_truncated_latest_checkpoint_falls_back_and_ends_bit_exactly(reference, tmp_path):
  workdir = _copy_of_reference(reference, tmp_path)
  _truncate_largest_file(workdir / "checkpoints" / "64")
  # A half-written step a crash left behind is no checkpoint.
  os.makedirs(workdir / "checkpoints" / "96.orbax-checkpoint-tmp-1" / "default")
  proc = run_cli(_args(workdir), check=True)
  assert "Traceback" not in proc.stderr
  warnings = [l for l in proc.stderr.splitlines() if "cannot be restored" in l]
  assert len(warnings) == 1 and "step 64" in warnings[0] and "resuming from step 32" in warnings[0]
  assert (workdir / "damaged_checkpoints" / "64").is_dir()
  assert _results(workdir)["params_sha256"] == reference[1]["params_sha256"]
  assert [json.loads(l)["epoch"] for l in open(workdir / "metrics.jsonl")] == [1, 2]


def test_no_restorable_checkpoint_says_what_to_delete(reference, tmp_path):
  workdir = _copy_of_reference(reference, tmp_path)
  for step in ("32", "64"):
    _truncate_largest_file(workdir / "checkpoints" / step)
  proc = run_cli(_args(workdir))
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  (line,) = _error_lines(proc.stderr, "nkd: error:")
  assert "no checkpoint in" in line and "delete" in line and "metrics.jsonl" in line
  # Nothing was restarted from step 0 over the run's records.
  assert [json.loads(l)["epoch"] for l in open(workdir / "metrics.jsonl")] == [1, 2]


def test_lost_checkpoints_are_not_a_silent_restart(reference, tmp_path):
  workdir = _copy_of_reference(reference, tmp_path)
  shutil.rmtree(workdir / "checkpoints")
  proc = run_cli(_args(workdir))
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = _error_lines(proc.stderr, "nkd: error:")
  assert "holds no checkpoint" in line and "metrics.jsonl" in line


def test_corrupted_bytes_are_caught_by_the_recorded_hash(tmp_path):
  """A checkpoint whose bytes changed but still decode restores the one before it."""
  import jax.numpy as jnp
  import numpy as np
  from nkd.training.checkpoint import Checkpointer

  class State:  # The fields the Checkpointer saves.

    def __init__(self, params, step):
      self.params, self.batch_stats, self.opt_state, self.step = params, {}, {}, step

    def replace(self, **kw):
      new = State(self.params, self.step)
      new.__dict__.update(kw)
      return new

  ckpt = Checkpointer(str(tmp_path / "checkpoints"), writer=True)
  for step in (1, 2):
    ckpt.save(State({"w": jnp.full((64,), float(step))}, jnp.int32(step)))
  sidecar = tmp_path / "checkpoints" / "2" / "nkd_checkpoint.json"
  record = json.loads(sidecar.read_text())
  record["params_sha256"] = "0" * 64  # As if the bytes on disk had changed since.
  sidecar.write_text(json.dumps(record))
  state, _ = ckpt.restore(State({"w": jnp.zeros((64,))}, jnp.int32(0)))
  assert int(state.step) == 1 and float(np.asarray(state.params["w"])[0]) == 1.0
  assert (tmp_path / "damaged_checkpoints" / "2").is_dir()
  ckpt.close()


def test_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path):
  from nkd.training import runlock

  workdir = str(tmp_path / "run")
  # A lock file left by a process killed with SIGKILL while it held the lock.
  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          textwrap.dedent(f"""
      import sys, time
      from nkd.training import runlock
      with runlock.hold({workdir!r}):
        print("held", flush=True)
        time.sleep(600)
      """),
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(runlock.WorkdirBusyError, match=f"process {holder.pid} on"):
      with runlock.hold(workdir):
        pass
  finally:
    holder.kill()
    holder.wait()
  assert os.path.exists(runlock.lock_path(workdir))  # Stale now, and taken over:
  with runlock.hold(workdir):
    assert json.load(open(runlock.lock_path(workdir)))["pid"] == os.getpid()
  assert not os.path.exists(runlock.lock_path(workdir))  # Removed when done.


def test_lock_without_flock_uses_the_file_and_takes_over_a_dead_process(tmp_path, monkeypatch):
  from nkd.training import runlock

  def no_flock(*args):
    raise OSError(errno.ENOLCK, "no locks")

  monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  path = runlock.lock_path(workdir)

  def lock_file_of(pid):
    with open(path, "w") as f:
      json.dump({"pid": pid, "host": os.uname().nodename, "started": 0}, f)

  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  lock_file_of(dead.pid)
  with runlock.hold(workdir):
    assert json.load(open(path))["pid"] == os.getpid()
  assert not os.path.exists(path)
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lock_file_of(live.pid)
    with pytest.raises(runlock.WorkdirBusyError, match=f"process {live.pid} .*delete"):
      with runlock.hold(workdir):
        pass
  finally:
    live.kill()
    live.wait()


def test_results_json_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
  from nkd import fileio
  from nkd.errors import DiskFullError

  path = tmp_path / "results.json"
  path.write_text('{"previous": true}\n')

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(fileio.os, "fsync", full)
  with pytest.raises(DiskFullError, match=re.escape(str(path))):
    fileio.write_json(str(path), {"new": 1})
  assert json.loads(path.read_text()) == {"previous": True}
  assert os.listdir(tmp_path) == ["results.json"]  # No temporary file left.


def test_metrics_line_cut_short_is_dropped_and_written_again(reference, tmp_path):
  """A metrics.jsonl whose last line a full disk cut short: the run resumes and rewrites it."""
  workdir = _copy_of_reference(reference, tmp_path)
  shutil.rmtree(workdir / "checkpoints" / "64")
  text = (workdir / "metrics.jsonl").read_text()
  (workdir / "metrics.jsonl").write_text(text[:-40])
  proc = run_cli(_args(workdir), check=True)
  assert "Traceback" not in proc.stderr
  assert [json.loads(l)["epoch"] for l in open(workdir / "metrics.jsonl")] == [1, 2]
  assert _results(workdir)["params_sha256"] == reference[1]["params_sha256"]


def _unshare_works():
  if not shutil.which("unshare"):
    return False
  probe = subprocess.run(
      ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True
  )
  return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm to mount a small tmpfs")
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(reference, tmp_path):
  """On a 1 MB tmpfs the first checkpoint fits and the second does not; with more space the
  run resumes from the first and ends with the uninterrupted hash."""
  mount = tmp_path / "small"
  mount.mkdir()
  workdir = mount / "run"
  cmd = shlex.join([sys.executable, "-m", "nkd.main", *_args(workdir)])
  script = textwrap.dedent(f"""
      mount -t tmpfs -o size=1000k tmpfs {mount}
      {cmd} 2> {tmp_path}/first.err; echo "first=$?"
      ls {workdir}/checkpoints > {tmp_path}/after_first.txt
      mount -o remount,size=16m {mount}
      {cmd} 2> {tmp_path}/second.err; echo "second=$?"
      cp {workdir}/results.json {tmp_path}/results.json
      """)
  proc = subprocess.run(
      ["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
  )
  first_err = (tmp_path / "first.err").read_text()
  assert "first=2" in proc.stdout, first_err[-3000:]
  assert "Traceback" not in first_err
  (line,) = _error_lines(first_err, "nkd: error:")
  assert not [l for l in first_err.splitlines() if l.startswith("E")], first_err[-3000:]
  assert "no space left on device" in line and str(workdir / "checkpoints" / "64") in line
  assert "previous checkpoint (step 32) is intact" in line
  assert (tmp_path / "after_first.txt").read_text().split() == ["32"]
  assert "second=0" in proc.stdout, (tmp_path / "second.err").read_text()[-3000:]
  assert json.load(open(tmp_path / "results.json"))["params_sha256"] == (
      reference[1]["params_sha256"]
  )
