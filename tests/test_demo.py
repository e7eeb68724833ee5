"""The README's demo, end to end: teacher, distilled student, table; the teacher is reused."""

import json
import os

from helpers import run_cli

DEMO = "--flagfile=experiments/demo.flags"


def test_demo_end_to_end_and_teacher_reuse(tmp_path):
  proc = run_cli([DEMO, f"--workspace={tmp_path}"], check=True)
  assert "No teacher for recipe experiments/demo_teacher.flags" in proc.stderr
  table = proc.stdout
  assert "teacher" in table and "student" in table and "params_sha256" in table
  (teacher_dir,) = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path / "teachers")
                    for d in ds if d.startswith("seed_")]
  student = json.load(open(tmp_path / "runs" / "demo" / "seed_0" / "results.json"))
  teacher = json.load(open(os.path.join(teacher_dir, "results.json")))
  assert student["teacher"]["params_sha256"] == teacher["params_sha256"]
  assert teacher["test_accuracy"] > 30 and student["test_accuracy"] > 20  # Chance is 10%.
  # The demo's evaluation suite ran and was summarised.
  assert {"calibration", "pgd", "cifar10_c"} <= set(student)
  assert student["cifar10_c"]["source"] == "regenerated"
  assert "PGD-10" in table and "CIFAR-10-C (regenerated)" in table
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert os.path.exists(tmp_path / "runs" / "demo" / "seed_0" / name)

  # Another student seed reuses the teacher; the finished run is not redone.
  again = run_cli([DEMO, f"--workspace={tmp_path}", "--seed=1", "--epochs=1",
                  "--eval_suite=accuracy"], check=True)
  assert "No teacher" not in again.stderr
  assert json.load(open(tmp_path / "runs" / "demo" / "seed_1" / "results.json"))[
      "teacher"]["params_sha256"] == teacher["params_sha256"]
  rerun = run_cli([DEMO, f"--workspace={tmp_path}"], check=True)
  assert "not redone" in rerun.stderr
