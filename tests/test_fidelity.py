"""The recipe choices of docs/FIDELITY.md that are ours to pin: the `paper` PGD preset, the
label-noise streams of teacher and student, teacher selection among seeds, CIFAR-10-C relative
to clean accuracy, and the bad input of these options."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd import config as config_lib
from nkd import keys as keys_lib
from nkd import pipeline
from nkd import run_files
from nkd.config.evaluation import EvalOptions
from nkd.devices import make_mesh
from nkd.errors import ConfigError
from nkd.evaluation import cifar10c
from nkd.report import loading
from nkd.training.loop import epoch_training_labels, label_stream_key
from nkd.training.steps import replicate

from helpers import REPO, fast_compile_flags, run_cli, tiny_config, tiny_flags

C = 10  # classes


# ----- PGD ---------------------------------------------------------------------------------


def test_paper_preset_is_pgd_10_15_20_and_any_step_list_is_a_flag_away():
  options = EvalOptions()
  assert options.pgd_settings() == {"eps": (0.031,), "step_size": 0.003, "steps": (10, 15, 20)}
  assert options.pgd_restarts == 5
  assert EvalOptions(pgd_steps=(5, 10, 20)).pgd_settings()["steps"] == (5, 10, 20)
  with pytest.raises(ConfigError, match="--pgd_steps"):
    EvalOptions(pgd_steps=(0, 10)).validate()


# ----- the recipe defaults of docs/FIDELITY.md ---------------------------------------------


def test_recipe_defaults_and_their_alternatives_one_flag_away():
  c = config_lib.Config()
  assert (c.epochs, c.lr_schedule, c.lr_milestones, c.lr_decay) == (
      200,
      "step",
      (60, 120, 160),
      0.2,
  )
  assert config_lib.Config.from_options({"lr_milestones": ["60", "120", "150"]}).lr_milestones == (
      60,
      120,
      150,
  )  # the text's reading
  assert config_lib.fickle_schedule(0.1) == (250, (75, 150, 200))  # 0.3 / 0.6 / 0.8 of 250
  assert c.augment and not c.logit_noise_per_sample
  assert not c.input_noise_clip and (c.swap_threshold, c.swap_mode) == (0.05, "top2")
  assert (c.teacher_seeds, c.teacher_select, c.label_noise_shared) == ((), "test", False)
  assert (c.pgd_preset, c.pgd_restarts, c.pgd_loss) == ("paper", 5, "ce")


def test_the_last_partial_batch_is_dropped(tmp_path):
  from nkd.data import load_dataset  # pylint: disable=g-import-not-at-top
  from nkd.training.loop import train  # pylint: disable=g-import-not-at-top

  config = tiny_config(tmp_path, synthetic_train_size=80, batch_size=32, epochs=1)
  assert train(config, load_dataset(config)).results.steps == 2  # 80 // 32; 16 left over


# ----- label-noise streams -----------------------------------------------------------------


@pytest.fixture(scope="module")
def label_setup(tmp_path_factory):
  ws = tmp_path_factory.mktemp("ws")
  mesh = make_mesh()
  labels = replicate(jnp.asarray(np.arange(50_000) % C, jnp.int32), mesh)
  return ws, mesh, labels


def _labels(config, labels, mesh, epoch, teacher_seed=None):
  key = label_stream_key(config, teacher_seed)
  return np.asarray(epoch_training_labels(config, key, labels, epoch, C, mesh))


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "per_epoch"])
@pytest.mark.parametrize("seed", [0, 10])
def test_ts_student_labels_are_independent_of_the_teachers(label_setup, seed, fixed):
  """Mode TS, p = 0.25, teacher seed 0 (the default): on the samples the teacher's labels were
  corrupted, the student's agree only by chance (p / (C-1); 1 / (C-1) where both are
  corrupted), for the student seed equal to the teacher's as for any other."""
  ws, mesh, labels = label_setup
  p = 0.25
  teacher = tiny_config(ws, seed=0, label_noise_p=p, label_noise_fixed=fixed)
  student = tiny_config(
      ws,
      seed=seed,
      mode="kd",
      teacher_workdir="unused",
      label_noise_p=p,
      label_noise_mode="TS",
      label_noise_fixed=fixed,
  )
  clean = np.asarray(labels)
  for epoch in (0, 1):
    t = _labels(teacher, labels, mesh, epoch)
    s = _labels(student, labels, mesh, epoch, teacher_seed=0)
    corrupted, both = t != clean, (t != clean) & (s != clean)
    assert abs(corrupted.mean() - p) < 0.01 and abs((s != clean).mean() - p) < 0.01
    assert abs(np.mean(s[corrupted] == t[corrupted]) - p / (C - 1)) < 0.01
    assert abs(np.mean(s[both] == t[both]) - 1 / (C - 1)) < 0.03


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "per_epoch"])
@pytest.mark.parametrize("seed", [0, 10])
def test_shared_ts_student_labels_are_exactly_the_teachers(label_setup, seed, fixed):
  ws, mesh, labels = label_setup
  teacher = tiny_config(ws, seed=0, label_noise_p=0.25, label_noise_fixed=fixed)
  student = tiny_config(
      ws,
      seed=seed,
      mode="kd",
      teacher_workdir="unused",
      label_noise_p=0.25,
      label_noise_mode="TS",
      label_noise_fixed=fixed,
      label_noise_shared=True,
  )
  for epoch in (0, 1):
    t = _labels(teacher, labels, mesh, epoch)
    s = _labels(student, labels, mesh, epoch, teacher_seed=0)
    assert np.mean(t != np.asarray(labels)) > 0.2
    np.testing.assert_array_equal(s, t)  # agreement 1 on the teacher's corrupted samples


def test_label_streams_are_role_tagged_fold_ins():
  run_key = keys_lib.run_keys(3)["label_noise"]
  for role, tag in keys_lib.LABEL_ROLE_TAGS.items():
    np.testing.assert_array_equal(
        jax.random.key_data(keys_lib.label_noise_key(3, role)),
        jax.random.key_data(jax.random.fold_in(run_key, tag)),
    )
  assert keys_lib.LABEL_ROLE_TAGS["teacher"] != keys_lib.LABEL_ROLE_TAGS["student"]
  with pytest.raises(KeyError):
    keys_lib.label_noise_key(3, "ta")


def test_shared_labels_need_a_teacher_trained_on_them(tmp_path):
  config = tiny_config(
      tmp_path,
      mode="kd",
      teacher_workdir="unused",
      label_noise_p=0.25,
      label_noise_mode="TS",
      label_noise_shared=True,
  )

  class Data:

    def fingerprint(self):
      return "abc"

  def teacher(**options):
    run_files.write_json(
        str(tmp_path / "t" / run_files.CONFIG),
        {
            "data_fingerprint": "abc",
            "options": {"label_noise_p": 0.25, "label_noise_fixed": False, **options},
        },
    )
    return str(tmp_path / "t")

  pipeline._check_shared_labels(config, teacher(), Data())
  with pytest.raises(ConfigError, match="--label_noise_shared"):
    pipeline._check_shared_labels(config, teacher(label_noise_p=0.1), Data())


# ----- teacher selection -------------------------------------------------------------------


def _candidates(*accuracies):
  return [
      {"seed": s, "workdir": f"t/seed_{s}", "test_accuracy": test, "val_accuracy": val}
      for s, (test, val) in zip((0, 10, 20), accuracies)
  ]


def test_choose_teacher_picks_the_best_on_the_rules_split():
  candidates = _candidates((91.0, 80.0), (93.0, 79.0), (92.0, 85.0))
  by_test = pipeline.choose_teacher(candidates, "test")
  assert (by_test["chosen_seed"], by_test["metric"], by_test["rule"]) == (
      10,
      "test_accuracy",
      "test",
  )
  assert by_test["candidates"] == candidates and by_test["chosen_workdir"] == "t/seed_10"
  assert pipeline.choose_teacher(candidates, "val")["chosen_seed"] == 20
  tie = _candidates((93.0, None), (93.0, None))
  assert pipeline.choose_teacher(tie, "test")["chosen_seed"] == 0  # first in the list
  with pytest.raises(ConfigError, match="--teacher_select=val"):
    pipeline.choose_teacher(tie, "val")


def test_new_options_at_their_defaults_keep_recipe_hashes():
  student = config_lib.parse_flagfile(str(REPO / "experiments" / "demo.flags"))
  # The demo teacher's recipe hash (README quotes its folder).
  assert config_lib.teacher_config(student).workdir.endswith("demo_teacher-f3fe99fd/seed_0")
  stored = {
      k: v
      for k, v in student.to_dict().items()
      if k not in ("teacher_seeds", "teacher_select", "label_noise_shared")
  }
  assert student.differing_options(stored) == []
  assert student.replace(teacher_seeds=(0, 1)).differing_options(stored) == ["teacher_seeds"]


@pytest.mark.parametrize("after_tau", [False, True])
def test_a_config_json_with_the_removed_logit_noise_after_tau_still_loads(
    after_tau, tmp_path, caplog
):
  run = config_lib.parse_flagfile(str(REPO / "experiments" / "signal_noise.flags"))
  assert run.recipe_hash() == "6b490575"  # As before the option went (it was false).
  path = str(tmp_path / "config.json")
  run_files.write_json(path, {"options": {**run.to_dict(), "logit_noise_after_tau": after_tau}})
  stored = run_files.read_json(path)["options"]
  with caplog.at_level("WARNING"):
    loaded = config_lib.Config.from_options(stored)
  assert loaded == run and loaded.recipe_hash() == run.recipe_hash()
  assert ("logit_noise_after_tau" in caplog.text) == after_tau  # That run's rounding differed.
  # A run folder of the other rounding is not taken for (or resumed as) a run made now.
  assert run.differing_options(stored) == (["logit_noise_after_tau"] if after_tau else [])


def test_teacher_selection_trains_each_candidate_once_under_concurrent_students(tmp_path):
  """Two students start together, each selecting among teacher seeds 0 and 1: each teacher is
  trained once (by one of them), and both distil from the one with the best test accuracy,
  recorded in config.json and results.json."""
  teacher_flags = tmp_path / "teacher.flags"
  teacher_flags.write_text("\n".join(["--mode=ce", *tiny_flags(epochs=1)]) + "\n")
  ws = tmp_path / "ws"
  env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": fast_compile_flags()}
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "nkd.main",
              *tiny_flags(epochs=1),
              "--mode=kd",
              f"--teacher_flagfile={teacher_flags}",
              "--teacher_seeds=0,1",
              f"--seed={seed}",
              f"--workspace={ws}",
              "--name=sel",
          ],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for seed in (0, 1)
  ]
  outputs = [proc.communicate(timeout=600) for proc in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  logs = "".join(err for _, err in outputs)
  assert logs.count("No teacher for recipe") == 2, logs[-3000:]
  teachers = sorted(t for t in (ws / "teachers").glob("*/seed_*") if t.is_dir())
  assert [t.name for t in teachers] == ["seed_0", "seed_1"]
  accuracy = {int(t.name[5:]): run_files.read_results(str(t)).test_accuracy for t in teachers}
  best = max((0, 1), key=lambda s: accuracy[s])  # first on a tie, as --teacher_seeds lists
  for seed in (0, 1):
    workdir = ws / "runs" / "sel" / f"seed_{seed}"
    results = run_files.read_results(str(workdir))
    selection = results.teacher_selection
    assert selection["chosen_seed"] == best and selection["rule"] == "test"
    assert {c["seed"]: c["test_accuracy"] for c in selection["candidates"]} == accuracy
    assert results.teacher.workdir == selection["chosen_workdir"]
    assert results.teacher.workdir.endswith(f"seed_{best}")
    stored = json.loads((workdir / run_files.CONFIG).read_text())
    assert stored["teacher_selection"] == selection
    assert stored["options"]["teacher_seeds"] == [0, 1]


# ----- CIFAR-10-C relative to clean --------------------------------------------------------


def test_relative_cifar10c_accuracy_on_a_fixture():
  section = {
      "accuracy": {"gaussian_noise": {"1": 60.0, "5": 20.0}, "brightness": {"1": 80.0, "5": 80.0}},
      "mean_per_corruption": {"gaussian_noise": 40.0, "brightness": 80.0},
      "mean_15": None,
      "mean_19": None,
  }
  relative = cifar10c.relative_accuracy(section, 80.0)
  assert relative["clean_accuracy"] == 80.0
  assert relative["relative_accuracy"] == {
      "gaussian_noise": {"1": 75.0, "5": 25.0},
      "brightness": {"1": 100.0, "5": 100.0},
  }
  assert relative["relative_mean_per_corruption"] == {"gaussian_noise": 50.0, "brightness": 100.0}
  assert relative["relative_mean_15"] is None
  assert cifar10c.relative_accuracy(section, None)["relative_mean_per_corruption"] == {
      "gaussian_noise": None,
      "brightness": None,
  }
  # The report: from the section's clean accuracy, else (older results) the run's test accuracy.
  for stored_clean, test_accuracy in ((80.0, 50.0), (None, 80.0)):
    results = run_files.RunResults(
        experiment="hinton",
        seed=0,
        mode="kd",
        model="wrn-16-2",
        dataset="cifar10",
        epochs=1,
        steps=1,
        test_accuracy=test_accuracy,
        params_sha256="0",
        wall_time_s=1.0,
        cifar10_c={**section, "clean_accuracy": stored_clean},
    )
    metrics, _ = loading.extract_metrics(results, "fixture")
    assert metrics[("cifar10_c", "gaussian_noise")] == 40.0
    assert metrics[("cifar10_c_relative", "gaussian_noise")] == pytest.approx(50.0)
    assert metrics[("cifar10_c_relative", "brightness")] == pytest.approx(100.0)


# ----- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--teacher_seeds="], "--teacher_seeds"),
        (["--teacher_seeds=0,10,0"], "--teacher_seeds=0,10,0"),
        (["--teacher_seeds=0,10", "--teacher_select=val"], "--teacher_select=val"),
        (["--pgd_steps=0,10"], "--pgd_steps"),
    ],
)
def test_bad_fidelity_flags_are_one_line_exit_2(tmp_path, flags, fragment):
  proc = run_cli(
      [
          *tiny_flags(),
          f"--workspace={tmp_path}",
          "--mode=kd",
          "--teacher_flagfile=experiments/demo_teacher.flags",
          *flags,
      ]
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("nkd: error:")]
  assert len(errors) == 1 and fragment in errors[0], proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / "runs")
