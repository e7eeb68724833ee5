"""The README's demo, end to end: teacher, distilled student, table; the teacher is reused; and
its params_sha256 under the default --cpu_isa=AVX2 on 2 cores, as README quotes them."""

import contextlib
import json
import os

from helpers import REPO, run_cli

DEMO = "--flagfile=experiments/demo.flags"
# The demo's hashes with XLA:CPU pinned to AVX2 (--cpu_isa's default) on 2 cores, as README
# quotes them (WORKSPACE.md: what else they depend on). A change of numerics (code, packages, a
# random stream) changes them: then update them here, in README and in experiments/demo.flags.
TEACHER_SHA256 = "a7dd6ac72fa2776b"
STUDENT_SHA256 = "4277547ab7cc065c"


def _has_avx2() -> bool:
  from nkd import runtime  # pylint: disable=g-import-not-at-top
  return runtime.is_x86() and "AVX2" in runtime.host_isas()


@contextlib.contextmanager
def _two_cores():
  """Children run on 2 cores (XLA:CPU's thread count changes the rounding); False if fewer."""
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    yield False
    return
  os.sched_setaffinity(0, cores[:2])
  try:
    yield True
  finally:
    os.sched_setaffinity(0, cores)


def test_demo_end_to_end_and_teacher_reuse(tmp_path):
  with _two_cores() as two:
    proc = run_cli([DEMO, f"--workspace={tmp_path}"], check=True, env={"XLA_FLAGS": ""})
  assert "No teacher for recipe demo_teacher, seed 0" in proc.stderr
  table = proc.stdout
  assert "teacher" in table and "student" in table and "params_sha256" in table
  (teacher_dir,) = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path / "teachers")
                    for d in ds if d.startswith("seed_")]
  student = json.load(open(tmp_path / "runs" / "demo" / "seed_0" / "results.json"))
  teacher = json.load(open(os.path.join(teacher_dir, "results.json")))
  assert student["teacher"]["params_sha256"] == teacher["params_sha256"]
  if two and _has_avx2():  # The hashes README quotes.
    config = json.load(open(tmp_path / "runs" / "demo" / "seed_0" / "config.json"))
    assert config["cpu"]["isa"] == "AVX2" and config["cpu"]["cores"] == 2
    assert (teacher["params_sha256"][:16], student["params_sha256"][:16]) == (
        TEACHER_SHA256, STUDENT_SHA256)
    readme = (REPO / "README.md").read_text()
    assert TEACHER_SHA256 in readme and STUDENT_SHA256 in readme
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
