"""`python -m nkd.evaluate` on saved runs: results merged into results.json, bad input."""

import json
import shutil

import numpy as np
import pytest

from helpers import assert_one_line_error, run_module
from nkd import cli
from nkd import pipeline
from nkd.errors import NkdError

SMALL_SUITE = [
    "--eval_suite=accuracy,calibration,pgd",
    "--pgd_num_examples=32",
    "--pgd_steps=2",
    "--pgd_restarts=1",
    "--pgd_eps_sweep=0,1",
    "--pgd_sweep_num_examples=32",
    "--pgd_batch_size=32",
]


def evaluate_cli(args):
  return run_module("nkd.evaluate", args)


@pytest.fixture(scope="module")
def student_run(finished_runs, tmp_path_factory):
  """A copy of the session's tiny distilled student (this file rewrites its results.json)."""
  _, _, student = finished_runs
  copy = tmp_path_factory.mktemp("eval") / "student"
  shutil.copytree(student, copy)
  return copy


def test_evaluate_merges_the_suite_into_results(student_run):
  before = json.load(open(student_run / "results.json"))
  proc = evaluate_cli([f"--workdir={student_run}", *SMALL_SUITE])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "PGD-2" in proc.stdout and "teacher agreement" in proc.stdout
  after = json.load(open(student_run / "results.json"))
  assert after["params_sha256"] == before["params_sha256"]
  assert after["clean"]["accuracy"] == pytest.approx(before["test_accuracy"])
  (pgd,) = after["pgd"]["results"]
  assert pgd["steps"] == 2 and pgd["restarts"] == 1 and pgd["eps"] == pytest.approx(0.031)
  assert pgd["robust_accuracy"] <= pgd["clean_accuracy"]
  assert after["pgd"]["eps_sweep"]["accuracy"][-1] == 0.0
  assert 0 <= after["calibration"]["teacher_agreement"] <= 100


def test_cifar10c_folder_with_wrong_shapes_is_named(student_run, tmp_path):
  np.save(tmp_path / "gaussian_noise.npy", np.zeros((10, 16, 16, 3), np.uint8))
  np.save(tmp_path / "labels.npy", np.zeros(10, np.uint8))
  with pytest.raises(NkdError, match="gaussian_noise.npy"):
    pipeline.evaluate_run(
        str(student_run),
        {"eval_suite": "cifar10c", "cifar10c_source": "official", "cifar10c_dir": str(tmp_path)},
    )


def test_not_a_run_folder(tmp_path):
  # The process contract of nkd.evaluate: one line, exit 2, no traceback.
  assert_one_line_error(evaluate_cli([f"--workdir={tmp_path}"]), f"--workdir={tmp_path}")


def test_cinic_folder_without_class_folders_is_named(student_run, tmp_path):
  (tmp_path / "test").mkdir()
  with pytest.raises(NkdError, match=str(tmp_path / "test")):
    pipeline.evaluate_run(str(student_run), {"eval_suite": "cinic", "cinic_dir": str(tmp_path)})


def test_absent_cinic_is_reported_as_skipped(student_run):
  results = pipeline.evaluate_run(str(student_run), {"eval_suite": "cinic"})
  assert results.cinic_imagenet["status"] == "skipped" and results.cinic_imagenet["reason"]
  stored = json.load(open(student_run / "results.json"))["cinic_imagenet"]
  assert stored == results.cinic_imagenet
  assert any("skipped" in line for line in cli.summary_lines(results))


def test_a_bug_keeps_its_traceback(student_run, monkeypatch):
  """Only input errors become one-line messages: an evaluator's internal error propagates."""

  def broken(*args, **kwargs):
    raise ValueError("a bug, not bad input")

  monkeypatch.setattr(pipeline, "run_suite", broken)
  with pytest.raises(ValueError, match="a bug"):
    pipeline.evaluate_run(str(student_run), {"eval_suite": "accuracy"})
