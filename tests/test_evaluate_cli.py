"""`python -m nkd.evaluate` on saved runs: results merged into results.json, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli, tiny_flags
from test_cli import assert_one_line_error

SMALL_SUITE = ["--eval_suite=accuracy,calibration,pgd", "--pgd_num_examples=32",
               "--pgd_steps=2", "--pgd_restarts=1", "--pgd_eps_sweep=0,1",
               "--pgd_sweep_num_examples=32", "--pgd_batch_size=32"]


def evaluate_cli(args):
  return subprocess.run([sys.executable, "-m", "nkd.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
  """A tiny distilled student (and its teacher), trained with the accuracy-only suite."""
  ws = tmp_path_factory.mktemp("ws")
  teacher = ws / "teacher"
  run_cli([*tiny_flags(epochs=1), f"--workspace={ws}", f"--workdir={teacher}"], check=True)
  student = ws / "student"
  run_cli([*tiny_flags(epochs=1, mode="kd"), f"--teacher_workdir={teacher}",
           f"--workspace={ws}", f"--workdir={student}"], check=True)
  return student


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


@pytest.mark.parametrize("args,fragments", [
    (["--pgd_eps=-0.1"], ["--pgd_eps"]),
    (["--pgd_steps=0"], ["--pgd_steps"]),
    (["--pgd_restarts=0"], ["--pgd_restarts"]),
])
def test_bad_attack_settings(student_run, args, fragments):
  assert_one_line_error(evaluate_cli([f"--workdir={student_run}", *args]), *fragments)


def test_cifar10c_folder_with_wrong_shapes_is_named(student_run, tmp_path):
  np.save(tmp_path / "gaussian_noise.npy", np.zeros((10, 16, 16, 3), np.uint8))
  np.save(tmp_path / "labels.npy", np.zeros(10, np.uint8))
  proc = evaluate_cli([f"--workdir={student_run}", "--eval_suite=cifar10c",
                       "--cifar10c_source=official", f"--cifar10c_dir={tmp_path}"])
  assert_one_line_error(proc, "gaussian_noise.npy")


def test_not_a_run_folder(tmp_path):
  assert_one_line_error(evaluate_cli([f"--workdir={tmp_path}"]), f"--workdir={tmp_path}")


def test_cinic_folder_without_class_folders_is_named(student_run, tmp_path):
  (tmp_path / "test").mkdir()
  proc = evaluate_cli([f"--workdir={student_run}", "--eval_suite=cinic",
                       f"--cinic_dir={tmp_path}"])
  assert_one_line_error(proc, str(tmp_path / "test"))


def test_absent_cinic_is_reported_as_skipped(student_run):
  proc = evaluate_cli([f"--workdir={student_run}", "--eval_suite=cinic"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  cinic = json.load(open(student_run / "results.json"))["cinic_imagenet"]
  assert cinic["status"] == "skipped" and cinic["reason"]
  assert "skipped" in proc.stdout
