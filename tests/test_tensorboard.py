"""TensorBoard event files: a run writes them in its folder, TensorBoard's own reader reads the
logged values back, and --tensorboard=false leaves them out without changing the result."""

import glob
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, needs_torch, tiny_config

from nkd import pipeline
from nkd import run_files
from nkd import tensorboard

# The writer and TensorBoard's own reader are optional packages (without the writer a run writes
# no event files: tests/test_optional_deps.py).
pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every event file in `folder`, read by TensorBoard."""
  reader = event_accumulator.EventAccumulator(
      str(folder), size_guidance={event_accumulator.SCALARS: 0}
  )
  reader.Reload()
  return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def event_files(folder):
  return glob.glob(os.path.join(folder, "events.out.tfevents.*"))


def test_a_run_writes_what_it_logs(finished_runs):
  _, teacher, _ = finished_runs  # 1 epoch of 8 steps, --log_every=4
  assert event_files(teacher)
  scalars = read_scalars(teacher)
  assert {
      "train/loss",
      "train/accuracy",
      "train/lr",
      "train/img_per_s",
      "test/accuracy",
      "final/test_accuracy",
  } <= set(scalars)
  (epoch,) = run_files.read_metrics(teacher)
  losses = scalars["train/loss"]
  assert [step for step, _ in losses] == [4, 8]
  assert abs(sum(v for _, v in losses) / 2 - epoch["train_loss"]) < 1e-5
  assert abs(sum(v for _, v in scalars["train/accuracy"]) / 2 - epoch["train_accuracy"]) < 1e-4
  assert scalars["test/accuracy"] == [(8, pytest.approx(epoch["test_accuracy"], abs=1e-4))]
  results = run_files.read_results(teacher)
  assert scalars["final/test_accuracy"] == [
      (results.steps, pytest.approx(results.test_accuracy, abs=1e-4))
  ]


def test_tensorboard_false_writes_none_and_trains_the_same(finished_runs, tmp_path):
  ws, teacher, _ = finished_runs
  config = tiny_config(
      ws, epochs=1, workspace=str(ws), workdir=str(tmp_path / "quiet"), tensorboard=False
  )
  results = pipeline.run(config)
  assert not event_files(config.workdir)
  assert results.params_sha256 == run_files.read_results(teacher).params_sha256
  stored = json.load(open(os.path.join(config.workdir, run_files.CONFIG)))["options"]
  assert stored["tensorboard"] is False  # recorded, but not part of the recipe
  assert config.recipe_hash() == config.replace(tensorboard=True).recipe_hash()


def test_headline_numbers_of_an_evaluation(tmp_path):
  results = run_files.RunResults(
      experiment="x",
      seed=0,
      mode="kd",
      model="wrn-10-1",
      dataset="synthetic",
      epochs=1,
      steps=8,
      test_accuracy=61.5,
      params_sha256="0" * 64,
      wall_time_s=1.0,
      calibration={"ece": 3.5, "nll": 1.25, "teacher_agreement": 80.0},
      pgd={"results": [{"steps": 10, "eps": 0.031, "robust_accuracy": 12.5}]},
      cifar10_c={"mean_15": None, "mean_per_corruption": {"contrast": 30.0, "fog": 40.0}},
      smoothing={"certified_accuracy": {"0.25": 45.0}},
      cinic_imagenet={"status": "skipped", "reason": "absent"},
  )
  tensorboard.write_final(str(tmp_path), results)
  assert read_scalars(tmp_path) == {
      "final/test_accuracy": [(8, 61.5)],
      "final/ece": [(8, 3.5)],
      "final/nll": [(8, 1.25)],
      "final/teacher_agreement": [(8, 80.0)],
      "final/pgd10_eps0.031_robust_accuracy": [(8, 12.5)],
      "final/cifar10_c_mean": [(8, 35.0)],
      "final/certified_accuracy_r0.25": [(8, 45.0)],
  }
  tensorboard.write_final(str(tmp_path / "off"), results, enabled=False)
  assert not os.path.exists(tmp_path / "off")


def test_a_resumed_run_purges_what_came_after_its_checkpoint(tmp_path):
  with tensorboard.Board(str(tmp_path)) as board:
    for step in (4, 8, 12):
      board.scalars(step, {"train/loss": float(step)})
  with tensorboard.Board(str(tmp_path), purge_step=8) as board:  # resumed from step 8
    board.scalars(12, {"train/loss": 1.0})
  assert read_scalars(tmp_path)["train/loss"] == [(4, 4.0), (12, 1.0)]


@needs_torch
def test_the_writer_does_not_import_pytorch_unless_the_process_has():
  """tensorboardX imports PyTorch where it is installed (seconds of start-up in every run);
  nkd's writer leaves it out, and PyTorch imports normally afterwards, or before."""
  writer = "from nkd import tensorboard\nassert tensorboard.summary_writer_class()\n"
  use_torch = "import torch\nassert torch.zeros(2).sum().item() == 0\n"
  for script in (
      f"import sys\n{writer}assert 'torch' not in sys.modules, 'imported'\n{use_torch}",
      f"{use_torch}{writer}",  # imported before: left as it is
  ):
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
