"""What nkd.main prints when a run is done: the results table, and how the teacher was chosen."""

import dataclasses

from nkd import config as config_lib
from nkd import main
from nkd import run_files


def test_the_table_has_the_teachers_row_then_the_students(finished_runs, capsys):
  _, teacher_dir, student_dir = finished_runs
  student = run_files.read_results(student_dir)
  config = config_lib.Config(name="hinton", mode="kd", workdir=str(student_dir))
  main.print_results(config, student)
  header, rule, teacher_row, student_row = capsys.readouterr().out.splitlines()
  assert header.startswith("role") and header.endswith("params_sha256") and set(rule) == {"-"}
  teacher = run_files.read_results(teacher_dir)
  assert teacher_row.split()[0] == "teacher" and teacher_row.endswith(str(teacher_dir))
  assert teacher.params_sha256[:16] in teacher_row
  assert student_row.split()[0] == "student" and student_row.endswith(str(student_dir))
  assert f"{student.test_accuracy:.2f}%" in student_row

  selection = {
      "rule": "test",
      "metric": "test_accuracy",
      "chosen_seed": 1,
      "chosen_workdir": str(teacher_dir),
      "candidates": [{"seed": 0, "test_accuracy": 10.0}, {"seed": 1, "test_accuracy": 20.0}],
  }
  main.print_results(config, dataclasses.replace(student, teacher_selection=selection))
  assert capsys.readouterr().out.splitlines()[-1] == (
      "teacher selection (test_accuracy): seed 0 10.00%, seed 1 20.00% -> seed 1"
  )


def test_a_run_without_a_teacher_is_one_row_named_by_the_run_with_its_evaluation(
    finished_runs, capsys
):
  _, teacher_dir, _ = finished_runs
  teacher = run_files.read_results(teacher_dir).with_sections(
      {"calibration": {"ece": 3.5, "nll": 1.25}}
  )
  main.print_results(config_lib.Config(name="teacher", workdir=str(teacher_dir)), teacher)
  lines = capsys.readouterr().out.splitlines()
  assert lines[2].split()[0] == "teacher" and len(lines) == 6
  assert lines[4:] == ["evaluation of the teacher:", "  ECE / NLL           3.50% / 1.2500"]
