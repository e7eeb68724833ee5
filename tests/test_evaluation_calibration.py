"""Calibration metrics on inputs with known answers, and EvalOptions."""

import dataclasses
import typing

import numpy as np
import pytest

from nkd.evaluation import calibration
from nkd.config.evaluation import EvalOptions
from nkd.errors import ConfigError


def _two_class_logits(confidence: float, n: int) -> np.ndarray:
  """Logits whose softmax puts `confidence` on class 0."""
  return np.tile(np.log([confidence, 1 - confidence]), (n, 1))


def test_ece_single_bin_known_answer():
  logits = _two_class_logits(0.8, 10)
  labels = np.array([0] * 6 + [1] * 4)  # 60% correct at 80% confidence
  assert calibration.expected_calibration_error(logits, labels) == pytest.approx(0.2)
  result = calibration.evaluate_calibration(logits, labels)
  assert result["ece"] == pytest.approx(20.0) and result["ece_units"] == "percent"
  assert result["accuracy"] == pytest.approx(60.0) and result["ece_num_bins"] == 15


def test_ece_two_bins_weighted_by_size():
  logits = np.concatenate([_two_class_logits(0.9, 4), _two_class_logits(0.6, 2)])
  labels = np.array([0, 0, 0, 0, 0, 1])  # bin 0.9: 100% correct; bin 0.6: 50% correct
  expected = 4 / 6 * abs(1.0 - 0.9) + 2 / 6 * abs(0.5 - 0.6)
  assert calibration.expected_calibration_error(logits, labels) == pytest.approx(expected)


def test_ece_zero_when_calibrated_and_one_bin_pools_everything():
  logits = np.concatenate([_two_class_logits(0.75, 4), _two_class_logits(0.95, 20)])
  labels = np.array([0, 0, 0, 1] + [0] * 19 + [1])
  assert calibration.expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)
  # With one bin the over- and under-confidence of different examples cancel out.
  logits = np.concatenate([_two_class_logits(0.6, 5), _two_class_logits(0.9, 5)])
  labels = np.array([0] * 5 + [0, 0, 0, 1, 1])  # 0.6 -> 100%, 0.9 -> 60%
  assert calibration.expected_calibration_error(logits, labels, num_bins=1) == pytest.approx(
      abs(0.8 - 0.75)
  )
  assert calibration.expected_calibration_error(logits, labels) == pytest.approx(
      0.5 * 0.4 + 0.5 * 0.3
  )


def test_nll_agreement_and_kl():
  logits = np.zeros((3, 10))
  assert calibration.negative_log_likelihood(logits, np.array([0, 1, 2])) == pytest.approx(
      np.log(10)
  )
  teacher = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
  student = np.log(np.array([[0.25, 0.75], [0.9, 0.1]]))
  kl = 0.5 * (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75))
  assert calibration.mean_kl(teacher, student) == pytest.approx(kl)
  assert calibration.mean_kl(teacher, teacher) == pytest.approx(0.0, abs=1e-12)
  assert calibration.top1_agreement(student, teacher) == pytest.approx(0.5)  # argmax ties -> 0
  with pytest.raises(ValueError, match="shape"):
    calibration.mean_kl(teacher, student[:1])


def test_every_option_has_help_and_a_flag_type():
  allowed = (str, int, float, bool)
  hints = typing.get_type_hints(EvalOptions)
  for field in dataclasses.fields(EvalOptions):
    assert field.metadata.get("help"), field.name
    kind = hints[field.name]
    assert kind in allowed or typing.get_origin(kind) is tuple, (field.name, kind)
  options = EvalOptions()
  assert options.validate() is options
  with pytest.raises(dataclasses.FrozenInstanceError):
    options.pgd_restarts = 3  # type: ignore[misc]
  assert options.pgd_settings() == {"eps": (0.031,), "step_size": 0.003, "steps": (10, 15, 20)}
  common = EvalOptions(pgd_preset="common", pgd_steps=(7,)).pgd_settings()
  assert common == {"eps": (8 / 255,), "step_size": 2 / 255, "steps": (7,)}


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"pgd_eps": (-0.1,)}, "--pgd_eps"),
        ({"pgd_steps": (0,)}, "--pgd_steps"),
        ({"pgd_restarts": 0}, "--pgd_restarts"),
        ({"pgd_loss": "l2"}, "--pgd_loss"),
        ({"pgd_preset": "strong"}, "--pgd_preset"),
        ({"eval_suite": "pgd,speed"}, "--eval_suite"),
        ({"cifar10c_source": "web"}, "--cifar10c_source"),
        ({"cifar10c_source": "official"}, "--cifar10c_dir"),
        ({"cifar10c_corruptions": "fog,rain"}, "--cifar10c_corruptions"),
        ({"cifar10c_severities": (0,)}, "--cifar10c_severities"),
        ({"ece_bins": 0}, "--ece_bins"),
        ({"pgd_batch_size": 0}, "--pgd_batch_size"),
        ({"pgd_step_size": -1.0}, "--pgd_step_size"),
    ],
)
def test_validate_names_the_flag(overrides, flag):
  with pytest.raises(ConfigError, match=flag):
    EvalOptions(**overrides).validate()
