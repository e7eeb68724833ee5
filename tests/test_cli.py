"""Bad input through the command line: one line naming the flag or file, non-zero exit, no
traceback, nothing overwritten."""

import hashlib
import os

import pytest

from conftest import REPO, run_cli, tiny_flags


def assert_one_line_error(proc, *fragments):
  assert proc.returncode != 0, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("nkd: error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def _digest(folder):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      h.update(name.encode())
      h.update(open(os.path.join(root, name), "rb").read())
  return h.hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 1-epoch WRN-10-1 run (also used as a teacher of the wrong architecture)."""
  ws = tmp_path_factory.mktemp("ws")
  workdir = ws / "finished"
  run_cli([*tiny_flags(epochs=1), f"--workspace={ws}", f"--workdir={workdir}"], check=True)
  return ws, workdir


@pytest.mark.parametrize("flags,fragments", [
    (["--model=resnet-18"], ["--model", "wrn-DEPTH-WIDTH"]),
    (["--model=wrn-15-2"], ["--model", "6n+4"]),
    (["--lr=-0.1"], ["--lr=-0.1", "positive"]),
    (["--epochs=-1"], ["--epochs=-1"]),
    (["--dropout=1.0"], ["--dropout"]),
    (["--teacher_flagfile=experiments/demo_teacher.flags"], ["--teacher_flagfile", "--mode=ce"]),
    (["--mode=kd"], ["--teacher_flagfile"]),
    (["--input_noise_sigma=-0.1"], ["--input_noise_sigma=-0.1", ">= 0"]),
    (["--logit_noise_sigma=-1"], ["--logit_noise_sigma=-1"]),
    (["--logit_noise_sigma=0.1"], ["--logit_noise_sigma=0.1", "--mode=ce has no teacher"]),
    (["--fickle_teacher"], ["--fickle_teacher", "--mode=ce has no teacher"]),
    (["--swap_p=0.5"], ["--swap_p=0.5", "--mode=ce has no teacher"]),
    (["--label_noise_p=1.5"], ["--label_noise_p=1.5", "[0, 1]"]),
    (["--swap_p=-0.1"], ["--swap_p=-0.1", "[0, 1]"]),
    (["--swap_threshold=-1"], ["--swap_threshold=-1"]),
    (["--teacher_dropout=1.0"], ["--teacher_dropout=1.0", "[0, 1)"]),
    (["--label_noise_p=0.1", "--label_noise_mode=S"], ["--label_noise_mode=S", "teacher"]),
])
def test_bad_flags(tmp_path, flags, fragments):
  proc = run_cli([*tiny_flags(), f"--workspace={tmp_path}", *flags])
  assert_one_line_error(proc, *fragments)
  assert not os.path.exists(tmp_path / "runs")


def test_unknown_flag_is_refused(tmp_path):
  proc = run_cli([*tiny_flags(), f"--workspace={tmp_path}", "--sigmaa=3"])
  assert proc.returncode != 0 and "sigmaa" in proc.stderr


def test_batch_not_divisible_by_device_count(tmp_path):
  proc = run_cli([*tiny_flags(batch_size=31), f"--workspace={tmp_path}"],
                 env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert_one_line_error(proc, "--batch_size=31", "2 devices")


def test_missing_cifar10_says_what_to_put_where(tmp_path):
  proc = run_cli([*tiny_flags(dataset="cifar10"), f"--workspace={tmp_path}",
                  f"--data_dir={tmp_path}/nothing", "--nodownload"])
  assert_one_line_error(proc, "cifar-10-python.tar.gz", "--data_dir")


def test_corrupt_cifar10_tarball(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
  proc = run_cli([*tiny_flags(dataset="cifar10"), f"--workspace={tmp_path}",
                  f"--data_dir={tmp_path}/data", "--nodownload"])
  assert_one_line_error(proc, "cifar-10-python.tar.gz", "md5")
  assert (tmp_path / "data" / "cifar-10-python.tar.gz").read_bytes() == b"\x1f\x8b garbage"


def test_finished_workdir_with_another_config_is_left_alone(finished_run):
  ws, workdir = finished_run
  before = _digest(workdir)
  proc = run_cli([*tiny_flags(epochs=2), f"--workspace={ws}", f"--workdir={workdir}"])
  assert_one_line_error(proc, f"--workdir={workdir}", "finished", "epochs")
  assert _digest(workdir) == before


def test_finished_run_is_not_redone(finished_run):
  ws, workdir = finished_run
  before = _digest(workdir)
  proc = run_cli([*tiny_flags(epochs=1), f"--workspace={ws}", f"--workdir={workdir}"],
                 check=True)
  assert "not redone" in proc.stderr
  assert _digest(workdir) == before


def test_teacher_checkpoint_of_another_architecture(finished_run, tmp_path):
  ws, teacher_dir = finished_run  # A wrn-10-1.
  recipe = tmp_path / "teacher.flags"
  recipe.write_text("--mode=ce\n--model=wrn-10-2\n")
  proc = run_cli([*tiny_flags(mode="kd"), f"--workspace={tmp_path}",
                  f"--teacher_flagfile={recipe}", f"--teacher_workdir={teacher_dir}"])
  assert_one_line_error(proc, "wrn-10-1", "wrn-10-2")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(finished_run, tmp_path):
  ws, _ = finished_run
  proc = run_cli([*tiny_flags(epochs=2), "--lr=1e30", "--momentum=0", "--log_every=1",
                  f"--workspace={tmp_path}", f"--workdir={tmp_path}/run"])
  line = assert_one_line_error(proc, "non-finite loss", "checkpoint")
  assert not os.path.exists(tmp_path / "run" / "results.json")
  # Nothing after the divergence was checkpointed.
  assert not [d for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit()], line
