"""PGD, FGSM, the eps sweep and the whole suite on a small WRN trained here in a few seconds."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import trained_tiny
from nkd.config.evaluation import EvalOptions
from nkd.evaluation import pgd, predict
from nkd.evaluation.suite import run_suite
from nkd.models.wrn import init_variables

N_TEST = 40  # two batches of 24, the second padded and masked


@pytest.fixture(scope="module")
def trained():
  """WRN-10-1 trained for 40 SGD steps: (apply_fn, variables, test images uint8, labels)."""
  tiny = trained_tiny(steps=40, num_test=N_TEST)
  return tiny.apply_fn, tiny.variables, tiny.test_images, tiny.test_labels


@pytest.fixture(scope="module")
def pgd_result(trained):
  """One evaluate_pgd over 4 eps x 2 step counts x 2 restarts + FGSM, and its trace count."""
  apply_fn, variables, x, y = trained
  before = pgd.pgd_core_cache_size()
  result = pgd.evaluate_pgd(
      apply_fn,
      variables,
      jax.random.key(7),
      x,
      y,
      eps_list=[0.0, 0.01, 0.03, 0.1],
      steps_list=[2, 5],
      step_size=0.01,
      restarts=2,
      batch_size=24,
  )
  return result, pgd.pgd_core_cache_size() - before


def test_model_is_trained(trained):
  apply_fn, variables, x, y = trained
  logits = predict.compute_logits(apply_fn, variables, x, batch_size=24)
  assert np.mean(logits.argmax(-1) == y) == 1.0


def test_pgd_eps_zero_is_clean_accuracy(pgd_result):
  result, _ = pgd_result
  assert result["clean_accuracy"] == 100.0
  for r in result["results"]:
    if r["eps"] == 0.0:
      assert r["robust_accuracy"] == r["clean_accuracy"] == 100.0
      assert r["restart_accuracies"] == [100.0, 100.0]


def test_pgd_accuracy_never_rises_with_eps_and_attack_bites(pgd_result):
  result, _ = pgd_result
  for steps in (2, 5):
    accs = [r["robust_accuracy"] for r in result["results"] if r["steps"] == steps]
    assert accs == sorted(accs, reverse=True), accs
  strongest = [r for r in result["results"] if r["eps"] == 0.1 and r["steps"] == 5][0]
  assert strongest["robust_accuracy"] <= 50.0  # the attack does something on this model


def test_worst_case_is_below_every_restart(pgd_result):
  result, _ = pgd_result
  for r in result["results"]:
    assert len(r["restart_accuracies"]) == r["restarts"] == 2
    assert r["worst_restart_accuracy"] == min(r["restart_accuracies"])
    assert r["robust_accuracy"] <= r["worst_restart_accuracy"]
    assert set(r) >= {
        "eps",
        "step_size",
        "steps",
        "restarts",
        "loss",
        "clean_accuracy",
        "robust_accuracy",
        "worst_restart_accuracy",
        "restart_accuracies",
    }
  json.dumps(result)


def test_pgd_beats_fgsm(pgd_result):
  result, _ = pgd_result
  assert [f["eps"] for f in result["fgsm"]] == [0.0, 0.01, 0.03, 0.1]
  for f in result["fgsm"]:
    pgd5 = [r for r in result["results"] if r["eps"] == f["eps"] and r["steps"] == 5][0]
    assert pgd5["robust_accuracy"] <= f["accuracy"]
  assert result["sanity"]["pgd_le_fgsm"] is True
  assert result["fgsm"][0]["accuracy"] == 100.0  # eps 0


def test_pgd_core_compiled_once_for_all_eps_steps_restarts(pgd_result, trained):
  _, compiled = pgd_result
  assert compiled <= 1  # 0 if an earlier test compiled this shape already
  apply_fn, variables, x, y = trained
  before = pgd.pgd_core_cache_size()
  pgd.correct_under_attack(
      apply_fn, variables, jax.random.key(1), x, y, eps=0.05, step_size=0.02, steps=4, batch_size=24
  )
  assert pgd.pgd_core_cache_size() == before


def test_eps_sweep_reaches_zero_at_eps_one(trained):
  apply_fn, variables, x, y = trained
  sweep = pgd.eps_sweep(
      apply_fn,
      variables,
      jax.random.key(3),
      x,
      y,
      eps_values=(0.0, 0.03, 0.3, 1.0),
      steps=5,
      batch_size=24,
  )
  assert sweep["accuracy"][0] == 100.0
  assert sweep["accuracy"][-1] == 0.0
  assert sweep["accuracy"] == sorted(sweep["accuracy"], reverse=True)
  assert sweep["reaches_zero"] is True and sweep["monotone"] is True


def test_same_key_same_result_and_attack_stays_in_ball(trained):
  apply_fn, variables, x, y = trained
  xf = x[:24].astype(np.float32) / 255
  kwargs = dict(eps=0.03, step_size=0.01, steps=3)
  a = pgd.pgd_attack(apply_fn, variables, jax.random.key(5), x[:24], y[:24], **kwargs)
  before = pgd.pgd_core_cache_size()
  b = pgd.pgd_attack(apply_fn, variables, jax.random.key(5), x[:24], y[:24], **kwargs)
  c = pgd.pgd_attack(apply_fn, variables, jax.random.key(6), x[:24], y[:24], **kwargs)
  assert pgd.pgd_core_cache_size() == before
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  chex.assert_shape(a, xf.shape)
  assert np.all(np.abs(np.asarray(a) - xf) <= 0.03 + 1e-6)
  assert np.asarray(a).min() >= 0.0 and np.asarray(a).max() <= 1.0
  r1 = pgd.correct_under_attack(
      apply_fn, variables, jax.random.key(5), x, y, batch_size=24, **kwargs
  )
  r2 = pgd.correct_under_attack(
      apply_fn, variables, jax.random.key(5), x, y, batch_size=24, **kwargs
  )
  np.testing.assert_array_equal(r1, r2)


def test_pieces():
  images = jnp.full((2, 4, 4, 3), 0.5)
  x = pgd.project(images + jnp.array(0.3), images, 0.1)
  np.testing.assert_allclose(x, 0.6, rtol=1e-6)
  x = pgd.project(jnp.full((2, 4, 4, 3), 2.0), jnp.full((2, 4, 4, 3), 0.95), 0.1)
  np.testing.assert_allclose(x, 1.0)
  start = pgd.random_start(jax.random.key(0), images, 0.2)
  assert float(jnp.max(jnp.abs(start - images))) <= 0.2 + 1e-6
  assert float(jnp.std(start)) > 0.05
  logits = jnp.array([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
  np.testing.assert_allclose(pgd.margin_loss(logits, jnp.array([0, 2])), [3.0, -3.0])
  step = pgd.sign_gradient_step(jnp.zeros(3), jnp.array([-2.0, 0.0, 5.0]), 0.1)
  np.testing.assert_allclose(step, [-0.1, 0.0, 0.1])


def _first_pixel(variables, images):
  del variables
  return images[:, 0, 0, :]


@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(eps_list=[-0.1], steps_list=[5], step_size=0.01), "eps"),
        (dict(eps_list=[0.03], steps_list=[0], step_size=0.01), "steps"),
        (dict(eps_list=[0.03], steps_list=[5], step_size=0.01, restarts=0), "restarts"),
        (dict(eps_list=[0.03], steps_list=[5], step_size=0.01, loss="l2"), "loss"),
    ],
)
def test_bad_attack_options_name_the_option(kwargs, option):
  x = np.zeros((2, 32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match=f"^{option} "):
    pgd.evaluate_pgd(_first_pixel, {}, jax.random.key(0), x, np.zeros(2, int), **kwargs)


def test_run_suite_end_to_end(trained, tmp_path):
  apply_fn, variables, x, y = trained
  options = EvalOptions(
      eval_batch_size=24,
      pgd_batch_size=24,
      pgd_restarts=2,
      pgd_steps=(2,),
      pgd_eps_sweep=(0.0, 1.0),
      pgd_sweep_steps=5,
      cifar10c_source="auto",
      cifar10c_severities=(1, 5),
  )
  result = run_suite(
      apply_fn,
      variables,
      key=jax.random.key(0),
      test_images=x,
      test_labels=y,
      options=options,
      cache_dir=str(tmp_path),
      teacher=(apply_fn, variables),
  )
  json.dumps(result)
  assert set(result) == {"clean", "calibration", "pgd", "cifar10_c", "cinic_imagenet"}
  assert result["clean"]["accuracy"] == 100.0
  assert result["calibration"]["teacher_agreement"] == 100.0
  assert abs(result["calibration"]["kl_teacher_student"]) < 1e-9
  entry = result["pgd"]["results"][0]
  assert (entry["eps"], entry["steps"], entry["restarts"], entry["loss"]) == (0.031, 2, 2, "ce")
  assert result["pgd"]["eps_sweep"]["accuracy"][-1] == 0.0
  c = result["cifar10_c"]
  assert c["source"] == "regenerated"
  assert c["missing"] == ["frost"] and "frost" in c["missing_reasons"]["frost"]
  assert c["mean_15"] is None and c["mean_19"] is None  # frost missing, and 2 severities
  assert set(c["accuracy"]["gaussian_noise"]) == {"1", "5"}
  assert len(c["details"]["fallbacks"]) == 2
  assert result["cinic_imagenet"]["status"] == "skipped"
  assert "not found" in result["cinic_imagenet"]["reason"]
  # A second model of the same architecture (other weights) compiles nothing: the variables
  # are arguments of every jitted core, not constants baked into it.
  other = init_variables(trained_tiny().model, jax.random.key(99))
  before = (predict.logits_core_cache_size(), pgd.pgd_core_cache_size())
  only_pgd = run_suite(
      apply_fn,
      other,
      key=jax.random.key(0),
      test_images=x,
      test_labels=y,
      options=EvalOptions(
          eval_suite="accuracy,pgd",
          pgd_batch_size=24,
          eval_batch_size=24,
          pgd_restarts=1,
          pgd_steps=(2,),
          pgd_eps_sweep=(),
          pgd_fgsm=False,
      ),
  )
  assert (predict.logits_core_cache_size(), pgd.pgd_core_cache_size()) == before
  assert set(only_pgd) == {"clean", "pgd"} and "eps_sweep" not in only_pgd["pgd"]


def test_pgd_takes_its_clean_predictions_from_the_accuracy_sections_logits(trained):
  """After the accuracy section, PGD reads the clean predictions off the suite's clean logits
  (computed at --eval_batch_size) instead of computing them at its own batch size: the same
  section as PGD alone."""
  apply_fn, variables, x, y = trained

  def pgd_section(suite):
    options = EvalOptions(
        eval_suite=suite,
        eval_batch_size=24,
        pgd_batch_size=8,
        pgd_num_examples=16,
        pgd_restarts=1,
        pgd_steps=(2,),
        pgd_eps_sweep=(0.0, 1.0),
        pgd_sweep_num_examples=8,
        pgd_sweep_steps=2,
    )
    result = run_suite(
        apply_fn, variables, key=jax.random.key(4), test_images=x, test_labels=y, options=options
    )
    return {k: v for k, v in result["pgd"].items() if k != "time_s"}

  with_accuracy, alone = pgd_section("accuracy,pgd"), pgd_section("pgd")
  assert with_accuracy == alone
  assert with_accuracy["num_examples"] == 16 and with_accuracy["eps_sweep"]["num_examples"] == 8


def test_bucket_sizes_are_powers_of_two_up_to_the_batch_size():
  from nkd.evaluation import batching  # pylint: disable=g-import-not-at-top

  assert [batching.bucket_size(n, 8) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 8]
  assert batching.bucket_size(5, 6) == 6 and batching.bucket_size(0, 6) == 1


def test_registry_covers_every_suite_item_and_section_in_order():
  from nkd import run_files  # pylint: disable=g-import-not-at-top
  from nkd.config.evaluation import SUITE_ITEMS  # pylint: disable=g-import-not-at-top
  from nkd.evaluation.suite import EVALUATORS  # pylint: disable=g-import-not-at-top

  assert set(EVALUATORS) == set(SUITE_ITEMS)
  # results.json's sections come out in SECTIONS order, whatever order --eval_suite lists.
  assert tuple(e.section for e in EVALUATORS.values()) == run_files.SECTIONS


def test_suite_order_is_the_registry_order_and_the_loop_times_each_section(trained):
  apply_fn, variables, x, y = trained
  options = EvalOptions(eval_suite="calibration,accuracy", eval_batch_size=24)
  result = run_suite(
      apply_fn, variables, key=jax.random.key(0), test_images=x, test_labels=y, options=options
  )
  assert list(result) == ["clean", "calibration"]
  assert list(result["clean"]) == ["accuracy", "num_examples", "time_s"]
  assert result["calibration"]["accuracy"] == result["clean"]["accuracy"]
