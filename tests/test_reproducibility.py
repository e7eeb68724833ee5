"""Bit-exactness: one seed gives one params_sha256 across processes, and a run killed with
SIGKILL and resumed ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, TINY, run_cli, tiny_flags

# A resume from the first epoch's checkpoint crosses both learning-rate milestones.
TRAIN_IMAGES = 256
FLAGS = tiny_flags(
    epochs=3,
    synthetic_train_size=TRAIN_IMAGES,
    lr_schedule="step",
    lr_milestones=(1, 2),
    checkpoint_every=1,
)
STEPS_PER_EPOCH = TRAIN_IMAGES // TINY["batch_size"]


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  ws = tmp_path_factory.mktemp("ws")
  run_cli([*FLAGS, f"--workspace={ws}", f"--workdir={ws}/a"], check=True)
  return _results(ws / "a")


def test_same_seed_same_hash_across_processes(uninterrupted, tmp_path):
  run_cli([*FLAGS, f"--workspace={tmp_path}", f"--workdir={tmp_path}/b"], check=True)
  assert _results(tmp_path / "b")["params_sha256"] == uninterrupted["params_sha256"]
  assert len(uninterrupted["params_sha256"]) == 64


def test_another_seed_another_hash(uninterrupted, tmp_path):
  run_cli([*FLAGS, "--seed=1", f"--workspace={tmp_path}", f"--workdir={tmp_path}/c"], check=True)
  assert _results(tmp_path / "c")["params_sha256"] != uninterrupted["params_sha256"]


def test_sigkill_and_resume_equals_uninterrupted(uninterrupted, tmp_path):
  workdir = tmp_path / "killed"
  args = [
      sys.executable,
      "-m",
      "nkd.main",
      *FLAGS,
      f"--workspace={tmp_path}",
      f"--workdir={workdir}",
  ]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = workdir / "checkpoints" / str(STEPS_PER_EPOCH)
  deadline = time.time() + 300
  while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert ckpt.exists(), "the first checkpoint never appeared"
  assert not (workdir / "results.json").exists(), "the run finished before it was killed"
  resumed = run_cli([*FLAGS, f"--workspace={tmp_path}", f"--workdir={workdir}"], check=True)
  assert "Resumed" in resumed.stderr
  assert _results(workdir)["params_sha256"] == uninterrupted["params_sha256"]
  epochs = [json.loads(line)["epoch"] for line in open(workdir / "metrics.jsonl")]
  assert epochs == [1, 2, 3]
