"""Every flagfile of experiments/ parses and runs a couple of steps with a tiny override."""

import glob
import json
import os

import pytest

from nkd import config as config_lib
from nkd import pipeline

from helpers import REPO, tiny_flags

FLAGFILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(str(REPO / "experiments/*.flags")))
TINY = [
    *tiny_flags(synthetic_train_size=64, synthetic_test_size=32, epochs=1),
    "--eval_batch_size=32",
    "--nofickle_schedule",
]
TINY_TEACHER = [
    "--teacher_flags=--model=wrn-10-1",
    "--teacher_flags=--epochs=1",
    "--teacher_flags=--batch_size=32",
    "--teacher_flags=--eval_suite=accuracy",
]


def test_every_paper_experiment_has_a_flagfile():
  names = {os.path.basename(p)[: -len(".flags")] for p in FLAGFILES}
  assert {
      "teacher",
      "teacher_dropout",
      "student",
      "softrand_baseline",
      "hinton",
      "signal_noise",
      "fickle",
      "softrand",
      "label_noise_s",
      "label_noise_t",
      "label_noise_ts",
      "label_noise_fixed",
      "swap_top2",
      "swap_all",
      "demo",
  } <= names


@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_flagfile_has_a_header_and_runs_tiny(flagfile, tmp_path_factory, monkeypatch):
  monkeypatch.chdir(REPO)
  text = open(flagfile).read()
  header = [line for line in text.splitlines() if line.startswith("#")]
  assert text.startswith("#") and "python -m nkd.main --flagfile=" + flagfile in text
  # What it changes and reproduces, the command; no recipe copy, no expected time (those are
  # in experiments/README.md, once).
  assert len(header) <= 6 and not any("expected time" in line.lower() for line in header)
  # One workspace for all, so each teacher recipe is trained once and shared.
  ws = tmp_path_factory.getbasetemp() / "experiments_ws"
  overrides = [*TINY, f"--workspace={ws}"]
  full = config_lib.parse_flagfile(flagfile)
  if full.mode == "kd":
    overrides += TINY_TEACHER
  config = config_lib.parse_flagfile(flagfile, overrides)
  assert config.name == os.path.basename(flagfile)[: -len(".flags")]
  results = pipeline.run(config)
  assert results.steps == 2
  level_name, level = config_lib.noise_level(full)
  assert results.level_name == level_name and results.level == level
  saved = json.load(open(os.path.join(config.workdir, "config.json")))["options"]
  for flag in (
      "input_noise_sigma",
      "logit_noise_sigma",
      "label_noise_p",
      "swap_p",
      "fickle_teacher",
      "label_noise_mode",
  ):
    assert saved[flag] == getattr(config, flag)
