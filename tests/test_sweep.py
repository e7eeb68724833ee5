"""nkd.sweep: grid expansion and run-folder names, skip of finished runs, resume after a run is
killed, a failing run beside good ones, and one-line errors for bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, tiny_flags

from nkd import config as config_lib
from nkd.sweep import SweepError, grid, memory, plan, pool
from nkd.sweep import __main__ as sweep_cli

# 256 images at batch 32: 8 steps per epoch, a checkpoint after each epoch.
FLAGS = tiny_flags(epochs=3)
STEPS_PER_EPOCH = 256 // 32
STUDENT = "experiments/student.flags"


def run_sweep(args, *, timeout=300):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  return subprocess.run(
      [sys.executable, "-m", "nkd.sweep", *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def _sweep_json(ws, name="student"):
  with open(os.path.join(ws, "sweeps", name, "sweep.json")) as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------
# Grid expansion and naming (no runs).


def test_grid_is_the_cartesian_product_in_order():
  parsed = grid.parse_grid(["seed=0,10", "input_noise_sigma=0,0.05,0.10"])
  assert parsed == [("seed", [0, 10]), ("input_noise_sigma", [0.0, 0.05, 0.1])]
  runs = plan.expand(
      "experiments/softrand.flags", parsed, ["--epochs=2"], "ws", "softrand", python="python"
  )
  assert [r.name for r in runs] == [
      "seed=0,input_noise_sigma=0.0",
      "seed=0,input_noise_sigma=0.05",
      "seed=0,input_noise_sigma=0.1",
      "seed=10,input_noise_sigma=0.0",
      "seed=10,input_noise_sigma=0.05",
      "seed=10,input_noise_sigma=0.1",
  ]
  assert [r.index for r in runs] == list(range(6))
  assert runs[4].workdir == os.path.join(
      "ws", "sweeps", "softrand", "seed=10,input_noise_sigma=0.05"
  )
  assert runs[4].command == [
      "python",
      "-m",
      "nkd.main",
      "--flagfile=experiments/softrand.flags",
      "--epochs=2",
      "--seed=10",
      "--input_noise_sigma=0.05",
      "--workspace=ws",
      f"--workdir={runs[4].workdir}",
  ]


@pytest.mark.parametrize(
    "key,raw,text,flags",
    [
        ("seed", "010", "10", ["--seed=10"]),
        ("lr", "1e-1", "0.1", ["--lr=0.1"]),
        ("lr", "0.10", "0.1", ["--lr=0.1"]),
        ("input_noise_sigma", "0", "0.0", ["--input_noise_sigma=0.0"]),
        ("input_noise_clip", "True", "true", ["--input_noise_clip"]),
        ("input_noise_clip", "0", "false", ["--noinput_noise_clip"]),
        ("model", "wrn-16-2", "wrn-16-2", ["--model=wrn-16-2"]),
        ("lr_milestones", "60:120:160", "60:120:160", ["--lr_milestones=60,120,160"]),
        (
            "teacher_flags",
            "--epochs=5:--lr=0.05",
            "--epochs=5:--lr=0.05",
            ["--teacher_flags=--epochs=5", "--teacher_flags=--lr=0.05"],
        ),
        ("epochs", "abc", "abc", ["--epochs=abc"]),  # left as typed: nkd.main reports it
    ],
)
def test_values_are_formatted_stably(key, raw, text, flags):
  value = grid.parse_value(key, raw)
  assert grid.value_text(value) == text
  assert grid.point_flags({key: value}) == flags
  assert grid.parse_value(key, text) == value  # the folder name's text reads back the same


def test_folder_names_are_escaped_and_bounded():
  assert (
      grid.point_name([("teacher_flagfile", "experiments/t.flags")])
      == "teacher_flagfile=experiments%2Ft.flags"
  )
  assert grid.point_name([("teacher_flags", "--epochs=5")]) == "teacher_flags=--epochs%3D5"
  long = grid.point_name([("name_" + str(i), "x" * 30) for i in range(10)])
  assert len(long.encode()) <= 200 and re.search(r"-[0-9a-f]{12}$", long)
  assert long == grid.point_name([("name_" + str(i), "x" * 30) for i in range(10)])


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing run.


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--grid=sed=0,1"], "'sed' is not an option of nkd.main (did you mean seed?)"),
        (["--grid=seed"], "malformed --grid='seed'"),
        (["--grid==1,2"], "malformed --grid"),
        (["--grid=seed="], "empty value list for seed"),
        (["--grid=seed=0,,1"], "empty value in the list for seed"),
        (["--grid=seed=1,01"], "lists the value 1 more than once"),
        (["--grid=seed=0", "--grid=seed=1"], "more than one --grid"),
        (["--grid=workdir=a,b"], "--workdir is set by the sweep"),
        ([], "no --grid given"),
        (["--grid=seed=0", "--parallel=0"], "--parallel=0"),
        (["--grid=seed=0", "--task_index=1"], "--task_index=1: the grid has 1 points"),
        (["--grid=seed=0", "--list", "--count"], "not allowed with"),
        (["--grid=seed=0", "--epochs=2"], "unrecognized arguments --epochs=2"),
        (["--grid=seed=0", "--paralel=2"], "did you mean --parallel?"),
        (["--grid=seed=0", "--parallel=two"], "flag --parallel=two: invalid literal"),
        (["--grid=seed=0", "stray"], "unexpected arguments stray"),
        (["--grid=seed=0", "--", "--seed=3"], "seed is also a --grid key"),
        (["--grid=seed=0", "--", "--workdir=x"], "--workdir is set by the sweep"),
        (["--grid=seed=0", "--", "--bogus=1"], "Unknown command line flag 'bogus'"),
        (
            ["--grid=seed=0,1", "--parallel=2", "--mem_per_run_gb=100000"],
            "--parallel=2 does not fit: 2 x 100000.0 GiB",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, fragment):
  own, extra = sweep_cli.split_argv(args)
  argv = [f"--flagfile={STUDENT}", f"--workspace={tmp_path}", *own, "--", *FLAGS, *extra]
  assert sweep_cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("nkd.sweep: error: "), err
  assert fragment in err[0]
  assert not os.path.exists(tmp_path / "sweeps")


def test_flagfile_is_required_and_left_to_the_runs(capsys):
  assert sweep_cli.main(["--grid=seed=0"]) == 2
  assert capsys.readouterr().err == (
      "nkd.sweep: error: --flagfile is required: the " "experiment's nkd.main flagfile\n"
  )
  # Space-separated values, as absl takes them; the flagfile is not read as the sweep's flags.
  args, parsed, extra, *_ = sweep_cli.prepare(
      ["--flagfile", STUDENT, "--grid", "seed=0", "--parallel", "2", "--", "--epochs=1"]
  )
  assert (args.flagfile, args.parallel, parsed, extra) == (
      STUDENT,
      2,
      [("seed", [0])],
      ["--epochs=1"],
  )


def test_help_prints_the_options(capsys):
  assert sweep_cli.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert "running:\n" in out and "--task_index " in out and "--parallel=1 " in out


def test_too_many_runs_for_the_memory_from_the_estimate(tmp_path):
  # 100 tiny runs at once: a conservative estimate of ~1.8 GiB each exceeds any machine here.
  proc = run_sweep(
      [
          f"--flagfile={STUDENT}",
          "--grid=seed=" + ",".join(map(str, range(100))),
          "--parallel=100",
          f"--workspace={tmp_path}",
          "--",
          *FLAGS,
      ]
  )
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.startswith("nkd.sweep: error: --parallel=100 does not fit")
  assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_flagfile(tmp_path):
  proc = run_sweep(["--flagfile=experiments/no_such.flags", "--grid=seed=0"])
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      "nkd.sweep: error: --flagfile=experiments/no_such.flags: " "no such file"
  )


# ---------------------------------------------------------------------------------------------
# Real sweeps of tiny runs.


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  """seed 0 x lr {0.1, -1}, two at once: the lr=-1 run fails validation, the other finishes."""
  ws = tmp_path_factory.mktemp("ws")
  proc = run_sweep(
      [
          f"--flagfile={STUDENT}",
          "--grid=seed=0",
          "--grid=lr=0.1,-1",
          "--parallel=2",
          f"--workspace={ws}",
          "--",
          *FLAGS,
      ]
  )
  return ws, proc, _sweep_json(ws)


def test_a_failing_run_does_not_stop_the_others(finished_sweep):
  _, proc, summary = finished_sweep
  assert proc.returncode == 1, proc.stdout + proc.stderr
  status = {r["name"]: r["status"] for r in summary["runs"]}
  assert status == {"seed=0,lr=0.1": "ok", "seed=0,lr=-1.0": "failed"}
  failed = summary["runs"][1]
  assert failed["exit_code"] == 2
  assert failed["last_log_line"] == "nkd: error: --lr=-1.0: expected a positive learning rate"
  assert summary["counts"] == {"ok": 1, "failed": 1, "skipped": 0, "interrupted": 0}
  assert summary["grid"] == [["seed", ["0"]], ["lr", ["0.1", "-1.0"]]]
  assert summary["parallel"] == 2
  # The table: one row per run, with accuracy for the good ones and the reason for the others.
  table = proc.stdout[proc.stdout.index("  #  run") :]
  assert re.search(r"0  seed=0,lr=0\.1\s+ok\s+\d+\.\d\d%\s+\d+s", table)
  assert re.search(
      r"1  seed=0,lr=-1\.0\s+failed\s+-\s+\d+s\s+exit 2: nkd: error: --lr=-1\.0", table
  )


def test_each_run_has_its_folder_log_and_results(finished_sweep):
  ws, _, summary = finished_sweep
  for r in summary["runs"]:
    workdir = ws / "sweeps" / "student" / r["name"]
    assert r["workdir"] == str(workdir)
    log = (workdir / "log.txt").read_text()
    assert log.startswith("=== nkd.sweep ") and r["command"] in log
    if r["status"] == "ok":
      results = json.loads((workdir / "results.json").read_text())
      assert results["seed"] == int(r["overrides"]["seed"])
      assert results["params_sha256"] == r["params_sha256"]
      assert results["test_accuracy"] == r["test_accuracy"]


def test_rerun_skips_finished_runs(finished_sweep):
  ws, _, _ = finished_sweep
  listed = run_sweep(
      [
          f"--flagfile={STUDENT}",
          "--grid=seed=0,1",
          "--grid=lr=0.1,-1",
          f"--workspace={ws}",
          "--list",
          "--",
          *FLAGS,
      ]
  )
  states = [line.split()[:3] for line in listed.stdout.splitlines()]
  # The lr=-1 run was refused before training: its folder holds only a log.
  assert states == [
      ["0", "finished", "seed=0,lr=0.1"],
      ["1", "new", "seed=0,lr=-1.0"],
      ["2", "new", "seed=1,lr=0.1"],
      ["3", "new", "seed=1,lr=-1.0"],
  ]
  proc = run_sweep(
      [f"--flagfile={STUDENT}", "--grid=seed=0", "--grid=lr=0.1", f"--workspace={ws}", "--", *FLAGS]
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "start" not in proc.stdout and "skip   [1/1] seed=0,lr=0.1" in proc.stdout
  summary = _sweep_json(ws)
  assert [r["status"] for r in summary["runs"]] == ["skipped"]
  assert summary["runs"][0]["test_accuracy"] is not None
  # Another config in the same folder is not taken for finished: nkd.main refuses it.
  other = run_sweep(
      [
          f"--flagfile={STUDENT}",
          "--grid=seed=0",
          "--grid=lr=0.1",
          f"--workspace={ws}",
          "--",
          *tiny_flags(epochs=4),
      ]
  )
  assert other.returncode == 1
  run = _sweep_json(ws)["runs"][0]
  assert run["status"] == "failed" and "different config" in run["last_log_line"]


def test_killed_run_resumes_to_the_uninterrupted_result(finished_sweep, tmp_path):
  reference = finished_sweep[2]["runs"][0]
  assert reference["name"] == "seed=0,lr=0.1" and reference["status"] == "ok"
  args = [
      f"--flagfile={STUDENT}",
      "--grid=seed=0",
      "--grid=lr=0.1",
      f"--workspace={tmp_path}",
      "--",
      *FLAGS,
  ]
  workdir = tmp_path / "sweeps" / "student" / "seed=0,lr=0.1"
  first_checkpoint = workdir / "checkpoints" / str(STEPS_PER_EPOCH)
  proc = subprocess.Popen(
      [sys.executable, "-m", "nkd.sweep", *args],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env={**os.environ, "PYTHONUNBUFFERED": "1"},
  )
  child = None
  for line in proc.stdout:
    match = re.search(r"start\s+\[1/1\] .* \(pid (\d+)\)", line)
    if match:
      child = int(match.group(1))
      break
  assert child is not None
  deadline = time.time() + 120
  while not first_checkpoint.exists() and time.time() < deadline:
    time.sleep(0.01)
  os.kill(child, signal.SIGKILL)
  out, _ = proc.communicate(timeout=120)
  assert first_checkpoint.exists()
  assert proc.returncode == 1, out
  assert not (workdir / "results.json").exists(), "the run finished before it was killed"
  killed = _sweep_json(tmp_path)["runs"][0]
  assert killed["status"] == "failed" and killed["exit_code"] == -signal.SIGKILL

  resumed = run_sweep(args)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  run = _sweep_json(tmp_path)["runs"][0]
  assert run["status"] == "ok"
  assert run["params_sha256"] == reference["params_sha256"]
  log = (workdir / "log.txt").read_text()
  assert log.count("=== nkd.sweep ") == 2 and "Resumed" in log


def test_gpu_memory_check_uses_each_runs_fraction(monkeypatch):
  """On a GPU each run may take XLA_PYTHON_CLIENT_MEM_FRACTION of it (0.9/N by default)."""
  monkeypatch.setattr(
      memory,
      "probe_device",
      lambda env: {"platform": "gpu", "kind": "NVIDIA H100", "bytes_limit": 80 * memory.GIB},
  )
  hinton = config_lib.parse_flagfile("experiments/hinton.flags", [])
  per_run = memory.estimate_run_bytes(hinton, "gpu")
  assert 2 * memory.GIB < per_run < 8 * memory.GIB  # conservative, but several fit on one GPU
  fits = memory.check_parallel(4, [hinton], {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225"}, None)
  assert fits.startswith("4 x ") and "0.225" in fits
  with pytest.raises(
      SweepError, match=r"--parallel=40 does not fit: .* use " r"--parallel=\d+ or less"
  ):
    memory.check_parallel(40, [hinton], {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.0225"}, None)
  with pytest.raises(SweepError, match="would need 200%"):
    memory.check_parallel(4, [hinton], {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"}, None)
  monkeypatch.setattr(
      memory, "probe_device", lambda env: {"platform": "tpu", "kind": "TPU v4", "bytes_limit": None}
  )
  with pytest.raises(SweepError, match="TPU is held by one process"):
    memory.check_parallel(2, [hinton], {}, None)


def test_each_run_gets_its_share_of_the_gpu(tmp_path):
  args, *_ = sweep_cli.prepare([f"--flagfile={STUDENT}", "--grid=seed=0,1,2,3", "--parallel=4"])
  env = pool.child_env(args, 4)
  if "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
  assert env.get("XLA_PYTHON_CLIENT_PREALLOCATE") == os.environ.get(
      "XLA_PYTHON_CLIENT_PREALLOCATE"
  )  # JAX's default unless asked
  args, *_ = sweep_cli.prepare(
      [
          f"--flagfile={STUDENT}",
          "--grid=seed=0,1",
          "--parallel=2",
          "--mem_fraction=0.3",
          "--no_preallocate",
          f"--compile_cache={tmp_path}",
      ]
  )
  env = pool.child_env(args, 2)
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.300"
  assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path)
  assert str(REPO) in env["PYTHONPATH"].split(os.pathsep)
