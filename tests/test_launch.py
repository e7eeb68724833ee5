"""launch/: each script's dry run prints exactly what it would submit or run; the SLURM job
scripts it prints are then run here (with a stand-in srun) to check they really work."""

import json
import math
import os
import random
import re
import shlex
import stat
import subprocess
import sys

import pytest

from helpers import REPO, fast_compile_flags, tiny_flags

FLAGS = tiny_flags(epochs=3)  # as tests/test_sweep.py: shares its compiled programs


def launch(script, *args, env=None, timeout=300):
  full_env = {**os.environ, "NKD_PYTHON": sys.executable, **(env or {})}
  full_env.pop("DRY_RUN", None)
  full_env.update(env or {})
  return subprocess.run(
      ["bash", str(REPO / "launch" / script), *args],
      cwd="/",
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def submitted(proc):
  """(sbatch argv, job script) from a SLURM dry run."""
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("# ") and "nothing submitted" in lines[0]
  head = lines[1]
  assert head.endswith(" <<'NKD_JOB'") and lines[-1] == "NKD_JOB"
  return shlex.split(head[: -len(" <<'NKD_JOB'")]), "\n".join(lines[2:-1]) + "\n"


def run_job_script(script, tmp_path, env):
  path = tmp_path / "job.sh"
  path.write_text(script)
  return subprocess.run(
      ["bash", str(path)],
      cwd="/",
      capture_output=True,
      text=True,
      timeout=300,
      env={**os.environ, **env},
  )


# ---------------------------------------------------------------------------------------------
# SLURM array sweep.

SWEEP = [
    "--flagfile=experiments/student.flags",
    "--grid=seed=0,10,20",
    "--grid=input_noise_sigma=0,0.05",
]


def test_slurm_sweep_dry_run_submits_one_task_per_point(tmp_path):
  proc = launch(
      "slurm_sweep.sh",
      "--dry-run",
      "--partition=gpu",
      "--time=01:00:00",
      "--max-concurrent=4",
      "--sbatch-arg=--constraint=h100",
      "--",
      *SWEEP,
      f"--workspace={tmp_path}",
      "--",
      *FLAGS,
  )
  sbatch, script = submitted(proc)
  assert "6 grid points -> 6 array tasks" in proc.stdout
  assert sbatch[0] == "sbatch"
  for option in (
      "--array=0-5%4",
      "--job-name=nkd-student",
      "--partition=gpu",
      "--time=01:00:00",
      "--gpus-per-task=1",
      "--ntasks=1",
      f"--chdir={REPO}",
      "--requeue",
      "--signal=B:USR1@120",
      "--constraint=h100",
  ):
    assert option in sbatch, (option, sbatch)
  step_line = [l for l in script.splitlines() if l.startswith(sys.executable)][0]
  words = shlex.split(step_line.replace('"${SLURM_ARRAY_TASK_ID}"', "TASK"))
  assert words == [
      sys.executable,
      "-m",
      "nkd.sweep",
      "--task_index=TASK",
      *SWEEP,
      f"--workspace={tmp_path}",
      "--",
      *FLAGS,
      "&",
  ]
  # SIGUSR1 before the time limit: SIGTERM to the run (it checkpoints), then a requeue.
  assert 'scontrol requeue "$SLURM_JOB_ID"' in script and "trap" in script
  assert not (tmp_path / "sweeps").exists()


def test_slurm_sweep_dry_run_from_the_environment_and_its_errors(tmp_path):
  proc = launch(
      "slurm_sweep.sh",
      "--gpus-per-task=0",
      "--sbatch-arg=--gres=gpu:a100:1",
      "--",
      "--flagfile=experiments/student.flags",
      "--grid=seed=0,1",
      env={"DRY_RUN": "1"},
  )
  sbatch, _ = submitted(proc)
  assert "--array=0-1" in sbatch and "--gres=gpu:a100:1" in sbatch
  assert not any(o.startswith("--gpus-per-task") for o in sbatch)
  bad = launch(
      "slurm_sweep.sh", "--dry-run", "--", "--flagfile=experiments/student.flags", "--grid=sed=0"
  )
  assert bad.returncode == 2 and bad.stdout == ""
  assert bad.stderr.strip().startswith("nkd.sweep: error: --grid=sed=0")
  for args, fragment in (
      (["--dry-run"], "no nkd.sweep arguments"),
      (["--bogus"], "unknown option --bogus"),
      (["--max-concurrent=0", "--", *SWEEP], "--max-concurrent=0"),
  ):
    proc = launch("slurm_sweep.sh", *args)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
  usage = launch("slurm_sweep.sh", "--help")
  assert usage.returncode == 0 and "--array=0-(N-1)" in usage.stdout


def test_slurm_sweep_job_script_runs_its_grid_point(tmp_path):
  proc = launch(
      "slurm_sweep.sh",
      "--dry-run",
      "--",
      "--flagfile=experiments/student.flags",
      "--grid=seed=0,5",
      "--grid=lr=0.1",
      f"--workspace={tmp_path}",
      "--",
      *FLAGS,
  )
  _, script = submitted(proc)
  job = run_job_script(script, tmp_path, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77"})
  assert job.returncode == 0, job.stdout + job.stderr
  assert "nkd: array task 1 of job 77" in job.stdout
  points = sorted(os.listdir(tmp_path / "sweeps" / "student"))
  assert points == ["seed=5,lr=0.1"]  # only its own point, and no sweep.json
  results = json.loads((tmp_path / "sweeps/student/seed=5,lr=0.1/results.json").read_text())
  assert results["seed"] == 5


# ---------------------------------------------------------------------------------------------
# SLURM multi-node run.


def test_slurm_multinode_dry_run(tmp_path):
  proc = launch(
      "slurm_multinode.sh",
      "--dry-run",
      "--nodes=2",
      "--gpus-per-node=4",
      "--partition=gpu",
      "--",
      "--flagfile=experiments/hinton.flags",
      "--seed=10",
      "--batch_size=512",
  )
  sbatch, script = submitted(proc)
  assert "2 node(s) x 4 GPU(s): 8 processes" in proc.stdout
  for option in (
      "--nodes=2",
      "--ntasks-per-node=4",
      "--gpus-per-node=4",
      "--partition=gpu",
      "--job-name=nkd-hinton-2x4",
      f"--chdir={REPO}",
      "--requeue",
      "--signal=B:USR1@120",
  ):
    assert option in sbatch, (option, sbatch)
  # GPUs per node, never bound per task: JAX gives task SLURM_LOCALID its GPU itself.
  assert not any(o.startswith(("--gpus-per-task", "--gpu-bind")) for o in sbatch)
  srun = script[script.index("\nsrun") + 1 :].replace("\\\n", " ").splitlines()[0]
  assert shlex.split(srun) == [
      "srun",
      "--kill-on-bad-exit=1",
      "--ntasks=8",
      "--ntasks-per-node=4",
      sys.executable,
      "-m",
      "nkd.main",
      "--distributed",
      "--flagfile=experiments/hinton.flags",
      "--seed=10",
      "--batch_size=512",
      "&",
  ]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (
            ["--nodes=3", "--gpus-per-node=4", "--", "--flagfile=experiments/hinton.flags"],
            "--batch_size=128 does not split over 12 GPUs",
        ),
        (
            ["--", "--flagfile=experiments/hinton.flags", "--lr=-1"],
            "--lr=-1.0: expected a positive",
        ),
        (["--", "--flagfile=experiments/hinton.flags", "--distributed"], "passes --distributed"),
        (["--nodes=0", "--", "--flagfile=experiments/hinton.flags"], "--nodes=0"),
        (["--dry-run"], "no nkd.main flags"),
    ],
)
def test_slurm_multinode_bad_input(args, fragment):
  proc = launch("slurm_multinode.sh", "--dry-run", *args)
  assert proc.returncode == 2 and proc.stdout == ""
  assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


MULTI_FLAGS = tiny_flags(synthetic_train_size=128, synthetic_test_size=64)

# A stand-in for srun on one machine: starts --ntasks local processes with the environment
# srun gives its tasks, so jax.distributed.initialize() finds a SLURM job.
FAKE_SRUN = r"""#!/usr/bin/env bash
set -u
ntasks=1
while [[ "$1" == --* ]]; do
  case "$1" in --ntasks=*) ntasks="${1#*=}" ;; esac
  shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks SLURM_STEP_NODELIST=localhost \
    SLURM_STEP_NUM_NODES=1 "$@" > "$SRUN_LOG_DIR/task$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


def test_slurm_multinode_job_runs_two_processes_as_one_run(tmp_path):
  """The printed job, run with the stand-in srun: two CPU processes with two devices each
  train one run together on a mesh of 4 devices (process 0 writes the run folder)."""
  workdir = tmp_path / "run"
  proc = launch(
      "slurm_multinode.sh",
      "--dry-run",
      "--nodes=1",
      "--gpus-per-node=2",
      "--",
      *MULTI_FLAGS,
      f"--workspace={tmp_path}",
      f"--workdir={workdir}",
  )
  _, script = submitted(proc)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(FAKE_SRUN)
  (bin_dir / "srun").chmod(0o755 | stat.S_IXUSR)
  job_id = str(random.randrange(10**6))  # picks the coordinator port: avoid clashes
  job = run_job_script(
      script,
      tmp_path,
      {
          "PATH": f"{bin_dir}:{os.environ['PATH']}",
          "SRUN_LOG_DIR": str(tmp_path),
          "SLURM_JOB_ID": job_id,
          "SLURM_NNODES": "1",
          "SLURM_JOB_NODELIST": "localhost",
          "SLURM_NTASKS": "2",
          "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": fast_compile_flags("--xla_force_host_platform_device_count=2"),
      },
  )
  logs = "".join((tmp_path / f"task{i}.log").read_text()[-2000:] for i in range(2))
  assert job.returncode == 0, job.stdout + job.stderr + logs
  config = json.loads((workdir / "config.json").read_text())
  assert config["process_count"] == 2 and config["device_count"] == 4
  results = json.loads((workdir / "results.json").read_text())
  assert results["steps"] == 2 * 128 // 32
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2]
  assert all(math.isfinite(m["train_loss"]) for m in metrics)
  for i in range(2):
    assert "JAX distributed initialized" in (tmp_path / f"task{i}.log").read_text()


# ---------------------------------------------------------------------------------------------
# Cloud TPU VM.


def test_tpu_vm_dry_run():
  proc = launch(
      "tpu_vm.sh",
      "--dry-run",
      "--tpu=my-v4",
      "--zone=us-central2-b",
      "--project=proj",
      "--sync",
      "--setup",
      "--",
      "--flagfile=experiments/hinton.flags",
      "--seed=10",
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == "# TPU VM my-v4 (us-central2-b): 5 command(s) (dry run: nothing run)"
  commands = [shlex.split(l) for l in lines[1:]]
  assert commands[0][:3] == ["git", "-C", str(REPO)] and "archive" in commands[0]
  assert commands[1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  for command in commands[1:]:
    assert "--zone=us-central2-b" in command and "--project=proj" in command
    assert "--worker=all" in command
  ssh = commands[-1]
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4"]
  remote = ssh[-1]
  assert remote.startswith("--command=")
  assert shlex.split(remote[len("--command=") :]) == [
      "cd",
      "nkd",
      "&&",
      ".venv/bin/python",
      "-m",
      "nkd.main",
      "--distributed",
      "--flagfile=experiments/hinton.flags",
      "--seed=10",
  ]
  setup = shlex.split(commands[-2][-1][len("--command=") :])
  assert "jax[tpu]==0.10.2" in setup and "requirements.txt" in setup


def test_tpu_vm_background_sweep_and_errors():
  proc = launch(
      "tpu_vm.sh",
      "--tpu=t",
      "--zone=z",
      "--background",
      "--module=nkd.sweep",
      "--",
      "--flagfile=experiments/student.flags",
      "--grid=seed=0,10",
      env={"DRY_RUN": "1"},
  )
  assert proc.returncode == 0, proc.stderr
  remote = shlex.split(proc.stdout.splitlines()[-1])[-1][len("--command=") :]
  assert re.fullmatch(
      r"cd nkd && nohup \.venv/bin/python -m nkd\.sweep "
      r"--flagfile=experiments/student\.flags --grid=seed=0,10 "
      r"> tpu_run\.log 2>&1 < /dev/null &",
      remote,
  ), remote
  for args, fragment in (
      (["--zone=z", "--", "--seed=1"], "--tpu=NAME is required"),
      (["--tpu=t", "--", "--seed=1"], "--zone=ZONE is required"),
      (["--tpu=t", "--zone=z"], "no nkd.main arguments"),
      (["--tpu=t", "--zone=z", "--module=x", "--", "-"], "--module=x"),
  ):
    bad = launch("tpu_vm.sh", "--dry-run", *args)
    assert bad.returncode == 2 and fragment in bad.stderr, bad.stderr
