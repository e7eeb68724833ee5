"""nkd/config: the option sets derived from field metadata, and the evaluation checks."""

import dataclasses

import pytest

from nkd import config as config_lib
from nkd.config import evaluation
from nkd.errors import ConfigError


def test_option_sets_from_metadata_are_the_hand_kept_lists_they_replace():
  eval_names = {f.name for f in dataclasses.fields(config_lib.EvalOptions)}
  assert config_lib.BOOKKEEPING == frozenset(
      {
          "name",
          "workdir",
          "workspace",
          "data_dir",
          "log_every",
          "eval_every",
          "checkpoint_every",
          "keep_checkpoints",
          "download",
          "teacher_workdir",
          "gpu_deterministic",
          "cpu_isa",
          "level_flag",
          "distributed",
          "tensorboard",
          *eval_names,
      }
  )
  assert set(config_lib.INHERITED_BY_TEACHER) == {
      "workspace",
      "dataset",
      "data_dir",
      "data_source",
      "download",
      "train_subset",
      "validation_size",
      "synthetic_train_size",
      "synthetic_test_size",
      "synthetic_seed",
      "gpu_deterministic",
      "cpu_isa",
      "tensorboard",
  }
  assert config_lib.DATA_OPTIONS == (
      "dataset",
      "data_dir",
      "data_source",
      "train_subset",
      "validation_size",
      "synthetic_train_size",
      "synthetic_test_size",
      "synthetic_seed",
  )
  assert set(config_lib.DATA_OPTIONS) <= set(config_lib.INHERITED_BY_TEACHER)


def test_smoothing_defaults_are_the_shared_constants():
  options = config_lib.EvalOptions()
  assert (
      options.smoothing_n0,
      options.smoothing_n,
      options.smoothing_alpha,
      options.smoothing_num_examples,
      options.smoothing_batch_size,
  ) == (
      evaluation.SMOOTHING_N0,
      evaluation.SMOOTHING_N,
      evaluation.SMOOTHING_ALPHA,
      evaluation.SMOOTHING_NUM_EXAMPLES,
      evaluation.SMOOTHING_BATCH_SIZE,
  )
  assert options.smoothing_dtype in evaluation.SMOOTHING_DTYPES


@pytest.mark.parametrize(
    "check, kwargs, flag",
    [
        (evaluation.check_smoothing, {"sigma": float("nan")}, "--smoothing_sigma"),
        (evaluation.check_smoothing, {"n": True}, "--smoothing_n"),
        (
            evaluation.check_smoothing,
            {"num_examples": 11, "available": 10},
            "--smoothing_num_examples",
        ),
        (evaluation.check_autoattack, {"eps": (0.1, 1.5)}, "--autoattack_eps"),
        (evaluation.check_autoattack, {"eps": ()}, "--autoattack_eps"),
        (evaluation.check_autoattack, {"eot": 1.5}, "--attack_eot"),
        (
            evaluation.check_autoattack,
            {"num_examples": 10_001, "available": 10_000},
            "--autoattack_num_examples",
        ),
    ],
)
def test_checks_name_the_flag(check, kwargs, flag):
  with pytest.raises(ConfigError, match=flag):
    check(**kwargs)
  check()  # nothing given, nothing checked
