"""nkd.api, the notebook surface: a finished run loaded by its folder gives the numbers the run
gave, one evaluator runs on it, a config object trains, and the README's example runs."""

import os
import re

import numpy as np
import pytest

from helpers import REPO, TINY

from nkd import api
from nkd import run_files
from nkd.errors import DataError


def readme_notebook_example() -> str:
  """The Python block of the README's "In a notebook" section."""
  readme = (REPO / "README.md").read_text()
  section = readme.split("\n## In a notebook\n", 1)[1].split("\n## ", 1)[0]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(finished_runs, tmp_path, monkeypatch):
  _, _, student = finished_runs
  # The example's folder is the demo's student: here, a tiny distilled student.
  (tmp_path / "workspace" / "runs" / "demo").mkdir(parents=True)
  os.symlink(student, tmp_path / "workspace" / "runs" / "demo" / "seed_0")
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  exec(compile(readme_notebook_example(), "README.md", "exec"), {})  # pylint: disable=exec-used
  assert (tmp_path / "demo_student.png").stat().st_size > 0


def test_a_loaded_run_gives_its_numbers(finished_runs):
  _, teacher_dir, student_dir = finished_runs
  run = api.load_run(str(student_dir))
  assert run.config.mode == "kd" and run.config.model == TINY["model"]
  assert run.results == run_files.read_results(student_dir)
  assert run_files.params_sha256(run.variables) == run.results.params_sha256
  data = run.dataset()
  logits = run.logits(data.test_images)
  assert (
      logits.shape == (len(data.test_images), run.num_classes) == (TINY["synthetic_test_size"], 10)
  )
  np.testing.assert_array_equal(run.predict(data.test_images / 255.0), logits.argmax(-1))
  assert run.accuracy(data.test_images, data.test_labels) == pytest.approx(
      run.results.test_accuracy, abs=1e-9
  )
  assert [m["epoch"] for m in run.metrics] == [1]
  teacher = run.teacher()
  assert os.path.samefile(teacher.workdir, teacher_dir) and teacher.teacher() is None


def test_one_evaluator_with_options(finished_runs):
  run = api.load_run(str(finished_runs[2]))
  data = run.dataset()
  calibration = run.evaluate("calibration", data.test_images, data.test_labels, ece_bins=10)
  assert calibration["ece_num_bins"] == 10 and 0 <= calibration["ece"] <= 100
  pgd = run.evaluate(
      "pgd",
      data.test_images[:32],
      data.test_labels[:32],
      pgd_eps=[0.01],
      pgd_steps=[2],
      pgd_restarts=1,
      pgd_eps_sweep=[],
      pgd_fgsm=False,
  )
  assert [(r["eps"], r["steps"]) for r in pgd["results"]] == [(0.01, 2)]
  assert pgd["results"][0]["robust_accuracy"] <= pgd["clean_accuracy"]
  with pytest.raises(ValueError, match="unknown evaluator 'pdg'"):
    run.evaluate("pdg", data.test_images, data.test_labels)
  with pytest.raises(TypeError, match="epochs not an evaluation option"):
    run.evaluate("pgd", data.test_images, data.test_labels, epochs=3)


def test_train_from_a_config_object(finished_runs, tmp_path):
  ws, teacher_dir, _ = finished_runs
  config = api.config(**{**TINY, "epochs": 1}, workspace=str(ws), workdir=str(tmp_path / "api"))
  run = api.train(config)
  assert run.results.params_sha256 == run_files.read_results(teacher_dir).params_sha256
  from_flagfile = api.config(str(REPO / "experiments" / "demo.flags"), ["--epochs=1"], seed=3)
  assert (from_flagfile.epochs, from_flagfile.seed, from_flagfile.mode) == (1, 3, "kd")


def test_a_folder_without_a_finished_run_names_what_is_missing(tmp_path, finished_runs):
  with pytest.raises(DataError, match="no such folder"):
    api.load_run(str(tmp_path / "nothing"))
  with pytest.raises(
      DataError,
      match=r"holds no finished run: config\.json, results\.json, " r"checkpoints/ missing$",
  ):
    api.load_run(str(tmp_path))
  (tmp_path / "config.json").write_text((finished_runs[1] / "config.json").read_text())
  with pytest.raises(
      DataError,
      match=r"results\.json, checkpoints/ missing \(a run started " r"there has not finished",
  ):
    api.load_run(str(tmp_path))
  (tmp_path / "results.json").write_text((finished_runs[1] / "results.json").read_text())
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(DataError, match="no checkpoint"):
    api.load_run(str(tmp_path))
