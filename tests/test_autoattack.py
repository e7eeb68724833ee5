"""AutoAttack in JAX: APGD, Square, FAB-T, the runner, EOT and the gradient-masking check.

Small trained models (WRN-10-1 on 3 colour classes), 8 images per batch and few iterations, so
that the whole file runs in about a minute on a CPU; every model compiles each core once.
"""

from __future__ import annotations

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from helpers import trained_tiny
from nkd.config.evaluation import check_autoattack
from nkd.errors import ConfigError, NkdError
from nkd.evaluation import autoattack
from nkd.evaluation.autoattack import apgd, common, fab, masking, runner, square
from nkd.evaluation.pgd import cross_entropy_loss, project, random_start
from nkd.evaluation.predict import noisy_apply_fn

EPS = 8 / 255
BATCH = 8


@functools.lru_cache(maxsize=None)
def tiny():
  model = trained_tiny()
  return model, model.test_unit[:BATCH], model.test_labels[:BATCH]


def masked_apply_fn(variables, images):
  """The tiny classifier on 8-bit quantised input: the same predictions, zero gradient."""
  return trained_tiny().apply_fn(variables, jnp.round(images * 255.0) / 255.0)


def linear_apply_fn(variables, images):
  return images.reshape(images.shape[0], -1) @ variables["w"] + variables["b"]


@functools.partial(jax.jit, static_argnums=0)
def _pgd(apply_fn, variables, key, images, labels, eps, step_size, steps):
  """A plain PGD-CE from a random start, for comparison."""
  grad = jax.grad(lambda x: jnp.sum(cross_entropy_loss(apply_fn(variables, x), labels)))
  body = lambda _, x: project(x + step_size * jnp.sign(grad(x)), images, eps)
  x_adv = jax.lax.fori_loop(0, steps, body, random_start(key, images, eps))
  return jnp.argmax(apply_fn(variables, x_adv), -1) == labels


def pgd_accuracy(apply_fn, variables, images, labels, *, eps, steps, restarts=1):
  robust = np.ones(len(labels), bool)
  for r in range(restarts):
    robust &= np.asarray(
        _pgd(
            apply_fn,
            variables,
            jax.random.key(100 + r),
            jnp.asarray(images),
            jnp.asarray(labels),
            eps,
            2.5 * eps / steps,
            steps,
        )
    )
  return 100.0 * robust.mean()


def assert_in_ball(adversarial, images, eps):
  adversarial, images = np.asarray(adversarial), np.asarray(images, np.float32)
  assert adversarial.shape == images.shape and adversarial.dtype == np.float32
  assert np.max(np.abs(adversarial - images)) <= eps + 1e-6
  assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# Pure pieces.


def test_checkpoint_schedule_follows_the_paper():
  fractions = apgd.checkpoint_fractions(9)
  np.testing.assert_allclose(
      fractions, [0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99], atol=1e-9
  )
  assert apgd.checkpoint_schedule(100) == [22, 41, 57, 70, 80, 87, 93, 99]
  assert apgd.checkpoint_schedule(100) == [round(100 * p) for p in fractions[1:]]
  assert apgd.checkpoint_schedule(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # intervals of >= 1
  assert apgd.checkpoint_schedule(1) == [1]
  assert apgd.checkpoint_schedule(50)[:3] == [11, 21, 30]  # 11, then 11 - 1 = 10, 9, ...
  assert apgd.checkpoint_schedule(1000)[:3] == [220, 410, 570]


def test_step_halving_on_hand_written_traces():
  # Condition 1: the loss went up in <= 75% of the 22 steps.
  assert bool(apgd.should_halve(16, 22, True, 0.0, 1.0))  # 16 <= 16.5
  assert not bool(apgd.should_halve(17, 22, True, 0.0, 1.0))
  assert bool(apgd.should_halve(12, 16, True, 0.0, 1.0))  # the reference's <=
  # Condition 2: not halved last time and no better loss since.
  assert bool(apgd.should_halve(22, 22, False, 1.0, 1.0))
  assert not bool(apgd.should_halve(22, 22, True, 1.0, 1.0))  # halved at the last checkpoint
  assert not bool(apgd.should_halve(22, 22, False, 1.0, 2.0))  # improved

  # A loss that rises at every step never halves; a flat one halves at the 2nd checkpoint
  # (condition 2 cannot fire at the first, where it oscillates by condition 1 instead).
  rising = np.arange(101, dtype=np.float32)
  steps, halvings = apgd.simulate_step_sizes(rising, eps=1.0)
  assert halvings == [] and np.all(steps == 2.0)
  flat = np.zeros(101, np.float32)
  steps, halvings = apgd.simulate_step_sizes(flat, eps=1.0)
  assert halvings == apgd.checkpoint_schedule(100)  # no increase at all: condition 1 each time
  assert steps[-1] == 2.0 / 2**8 and steps[20] == 2.0 and steps[21] == 1.0

  # Rises for 18 of the first 22 steps (no halving), then stalls below its best: halves at 41
  # by condition 1 (no rise at all), and from then on at every checkpoint.
  trace = np.concatenate([np.arange(19), np.full(4, 18.0), np.full(78, 5.0)]).astype(np.float32)
  steps, halvings = apgd.simulate_step_sizes(trace, eps=0.5)
  assert halvings == [41, 57, 70, 80, 87, 93, 99]
  assert steps[40] == 0.5 and steps[39] == 1.0

  # Per example: two traces side by side, only the oscillating one halves at 22.
  zigzag = np.where(np.arange(101) % 2, 1.0, 0.0)
  both = np.stack([rising, zigzag], axis=1).astype(np.float32)
  steps, _ = apgd.simulate_step_sizes(both, eps=1.0)
  np.testing.assert_array_equal(steps[21], [2.0, 1.0])


def test_dlr_is_invariant_to_shift_and_positive_scale():
  logits = jax.random.normal(jax.random.key(0), (32, 10)) * 3
  labels = jax.random.randint(jax.random.key(1), (32,), 0, 10)
  targets = (labels + 1 + jax.random.randint(jax.random.key(2), (32,), 0, 9)) % 10
  shift = jax.random.normal(jax.random.key(3), (32, 1)) * 10
  scale = jnp.exp(jax.random.normal(jax.random.key(4), (32, 1)))
  for loss in (common.dlr_loss, common.dlr_targeted_loss):
    base = loss(logits, labels, targets)
    chex.assert_trees_all_close(
        loss(logits * scale + shift, labels, targets), base, rtol=2e-4, atol=1e-5
    )
  # The values themselves, against the formula written out.
  z = np.asarray(logits)
  order = np.sort(z, -1)[:, ::-1]
  y, t = np.asarray(labels), np.asarray(targets)
  other = np.max(np.where(np.eye(10)[y] > 0, -np.inf, z), -1)
  chex.assert_trees_all_close(
      common.dlr_loss(logits, labels),
      -(z[np.arange(32), y] - other) / (order[:, 0] - order[:, 2] + 1e-12),
      rtol=1e-5,
  )
  chex.assert_trees_all_close(
      common.dlr_targeted_loss(logits, labels, targets),
      -(z[np.arange(32), y] - z[np.arange(32), t])
      / (order[:, 0] - 0.5 * (order[:, 2] + order[:, 3]) + 1e-12),
      rtol=1e-5,
  )
  assert np.all(np.asarray(common.dlr_loss(logits, jnp.argmin(logits, -1))) > 0)


def test_square_schedule_and_sizes():
  p = [float(square.square_p(i, 5000)) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001)]
  assert p == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512]
  assert float(square.square_p(1, 1000, rescale=True)) == 0.8  # it = 10
  assert float(square.square_p(2, 1000, rescale=True)) == 0.8 / 2  # it = 20
  assert float(square.square_p(jnp.int32(600), jnp.int32(5000))) == pytest.approx(0.8 / 16)
  assert int(square.square_side(0.8, 32, 32)) == 29 and int(square.square_side(1e-6, 32, 32)) == 1
  assert int(square.square_side(4.0, 32, 32)) == 32


def test_linf_hyperplane_projection_is_the_smallest_step():
  rng = np.random.default_rng(0)
  n, d = 12, 7
  points = rng.uniform(0, 1, (n, d)).astype(np.float32)
  w = rng.normal(size=(n, d)).astype(np.float32)
  w[0, :3] = 0.0  # zero weights stay put
  b = (np.sum(w * points, -1) + rng.normal(0, 0.5, n)).astype(np.float32)
  delta = np.asarray(
      fab.project_linf_hyperplane(jnp.asarray(points), jnp.asarray(w), jnp.asarray(b))
  )
  assert np.all(delta[0, :3] == 0)
  for i in range(n):
    # min t s.t. w.(p + d) = b, |d_j| <= t, 0 <= p + d <= 1: variables (d, t).
    cost = np.r_[np.zeros(d), 1.0]
    a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
    lp = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(2 * d),
        A_eq=np.r_[w[i], 0.0][None],
        b_eq=[b[i] - w[i] @ points[i]],
        bounds=[(-p, 1 - p) for p in points[i]] + [(0, None)],
    )
    reached = points[i] + delta[i]
    assert np.all(reached >= -1e-6) and np.all(reached <= 1 + 1e-6)
    if lp.status == 0:
      np.testing.assert_allclose(w[i] @ reached, b[i], atol=1e-4)
      np.testing.assert_allclose(np.max(np.abs(delta[i])), lp.fun, rtol=1e-4, atol=1e-6)
    else:  # unreachable: every coordinate at its bound in the helpful direction
      direction = np.sign(w[i]) * np.sign(b[i] - w[i] @ points[i])
      np.testing.assert_allclose(reached[direction > 0], 1.0)
      np.testing.assert_allclose(reached[direction < 0], 0.0)


def test_masking_check_flags_with_their_numbers():
  clean = masking.masking_check(
      white_box_accuracy=50.0,
      square_accuracy=49.0,
      pgd_budget=[
          {"steps": 10, "restarts": 1, "accuracy": 50.5},
          {"steps": 20, "restarts": 1, "accuracy": 50.0},
      ],
      pgd_accuracy=50.0,
      apgd_accuracy=49.0,
      large_eps_accuracy={0.5: 3.0, 1.0: 0.0},
  )
  assert not clean["suspicious"] and clean["flags"] == []
  assert set(clean["checked"]) == {
      "square_beats_white_box",
      "pgd_budget",
      "no_zero_at_large_eps",
      "pgd_apgd_disagree",
  }
  bad = masking.masking_check(
      white_box_accuracy=60.0,
      square_accuracy=40.0,
      pgd_budget=masking.pgd_budget_from_result(
          {
              "results": [
                  {
                      "eps": 0.03,
                      "steps": 10,
                      "restarts": 5,
                      "robust_accuracy": 50.0,
                      "restart_accuracies": [58.0, 57, 56, 55, 54],
                  },
                  {
                      "eps": 0.03,
                      "steps": 20,
                      "restarts": 5,
                      "robust_accuracy": 40.0,
                      "restart_accuracies": [48.0, 47, 46, 45, 44],
                  },
              ]
          }
      ),
      pgd_accuracy=60.0,
      apgd_accuracy=45.0,
      large_eps_accuracy={"eps": [0.1, 1.0], "accuracy": [30.0, 12.5]},
      margin=2.0,
  )
  assert bad["suspicious"]
  flags = {f["name"]: f for f in bad["flags"]}
  assert set(flags) == {
      "square_beats_white_box",
      "pgd_more_steps_help",
      "pgd_more_restarts_help",
      "no_zero_at_large_eps",
      "pgd_apgd_disagree",
  }
  assert flags["square_beats_white_box"]["values"]["square_accuracy"] == 40.0
  assert flags["pgd_more_steps_help"]["values"]["accuracy"] == [50.0, 40.0]
  assert flags["pgd_more_restarts_help"]["values"]["accuracy"] == [48.0, 40.0]
  assert flags["no_zero_at_large_eps"]["values"] == {
      "eps": 1.0,
      "accuracy": 12.5,
      "zero_tolerance": 0.0,
  }
  assert "APGD" in flags["pgd_apgd_disagree"]["message"]
  json.dumps(bad)
  # The margin is configurable.
  assert not masking.masking_check(
      white_box_accuracy=60.0, square_accuracy=40.0, square_margin=25.0
  )["suspicious"]


def test_eot_averages_gradients_and_softmax():
  def random_fn(variables, x, key):  # logits a_k * sum(x) * [1, -1, 0], a_k ~ U(0, 2)
    a = jax.random.uniform(key, (), minval=0.0, maxval=2.0)
    return a * jnp.sum(x.reshape(x.shape[0], -1), -1, keepdims=True) * variables

  variables = jnp.array([1.0, -1.0, 0.0])
  x = jnp.full((2, 2, 2, 1), 0.25)
  key = jax.random.key(7)
  spec = common.model_spec(None, random_fn, eot=4)
  loss, grad, scores = common.loss_grad_scores(spec, variables, x, key, lambda z: z[:, 0])
  draws = [
      float(jax.random.uniform(jax.random.fold_in(key, k), (), minval=0.0, maxval=2.0))
      for k in range(4)
  ]
  np.testing.assert_allclose(grad, np.full(x.shape, np.mean(draws)), rtol=1e-5)
  np.testing.assert_allclose(loss, [np.mean(draws)] * 2, rtol=1e-5)  # sum(x) = 1
  probs = np.mean([jax.nn.softmax(a * np.asarray(variables)) for a in draws], 0)
  np.testing.assert_allclose(np.exp(scores), [probs, probs], rtol=1e-5)
  np.testing.assert_allclose(common.scores(spec, variables, x, key), scores, rtol=1e-5)
  # Deterministic models: K is ignored.
  assert common.model_spec(linear_apply_fn, None, eot=5)[2] == 1


# ---------------------------------------------------------------------------------------------
# Attacks on small models.


def test_fab_finds_the_boundary_of_a_linear_classifier():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(48, 3)).astype(np.float32)
  variables = {"w": w, "b": np.zeros(3, np.float32)}
  x = (0.5 + rng.uniform(-0.1, 0.1, (BATCH, 4, 4, 3))).astype(np.float32)
  logits = x.reshape(BATCH, -1) @ w
  y = np.argmax(logits, -1).astype(np.int32)
  # Closed form: the L-inf distance to the boundary with class k is (z_y - z_k) / |w_k - w_y|_1
  # (all within [0, 1] here); FAB-T targets the nearest one.
  dist = np.full((BATCH, 3), np.inf)
  for i in range(BATCH):
    for k in range(3):
      if k != y[i]:
        dist[i, k] = (logits[i, y[i]] - logits[i, k]) / np.abs(w[:, k] - w[:, y[i]]).sum()
  targets, nearest = np.argmin(dist, -1).astype(np.int32), dist.min(-1)
  assert nearest.max() < 0.4  # far from the box's faces
  result = fab.fab_attack(
      linear_apply_fn, variables, jax.random.key(0), x, y, eps=1.0, n_iter=100, targets=targets
  )
  assert np.all(result["distance"] >= nearest * (1 - 1e-4))
  assert np.all(result["distance"] <= nearest * 1.01)
  # The boundary point: x + d sign(w_t - w_y) (every pixel moved by d).
  boundary = x.reshape(BATCH, -1) + nearest[:, None] * np.sign(w[:, targets] - w[:, y]).T
  np.testing.assert_allclose(
      result["adversarial"].reshape(BATCH, -1), boundary, atol=0.011 * nearest.max()
  )
  assert np.all(np.argmax(result["adversarial"].reshape(BATCH, -1) @ w, -1) != y)
  # Within a smaller eps nothing is found and the clean image comes back.
  small = fab.fab_attack(
      linear_apply_fn,
      variables,
      jax.random.key(0),
      x,
      y,
      eps=float(nearest.min()) * 0.9,
      n_iter=20,
      targets=targets,
  )
  assert small["robust"].all() and np.array_equal(small["adversarial"], x)


def test_apgd_ce_is_at_least_as_strong_as_pgd_and_stays_in_the_ball():
  model, x, y = tiny()
  for eps in (4 / 255, EPS):
    result = apgd.apgd_attack(
        model.apply_fn, model.variables, jax.random.key(0), x, y, eps=eps, n_iter=20
    )
    assert_in_ball(result["adversarial"], x, eps)
    apgd_acc = 100.0 * result["robust"].mean()
    pgd_acc = pgd_accuracy(model.apply_fn, model.variables, x, y, eps=eps, steps=20)
    assert apgd_acc <= pgd_acc, (eps, apgd_acc, pgd_acc)
    # An adversarial is misclassified; the robust ones are not.
    pred = np.argmax(np.asarray(model.apply_fn(model.variables, result["adversarial"])), -1)
    assert np.all(pred[~result["robust"]] != y[~result["robust"]])
  assert apgd_acc < 100.0  # the attack does something at 8/255
  # The same key gives the same result; targeted DLR runs in the same compilation.
  again = apgd.apgd_attack(
      model.apply_fn, model.variables, jax.random.key(0), x, y, eps=EPS, n_iter=20
  )
  np.testing.assert_array_equal(again["adversarial"], result["adversarial"])
  targeted = apgd.apgd_attack(
      model.apply_fn,
      model.variables,
      jax.random.key(0),
      x,
      y,
      eps=EPS,
      n_iter=20,
      loss="dlr-targeted",
  )
  assert_in_ball(targeted["adversarial"], x, EPS)


def test_one_compilation_per_shape():
  model, x, y = tiny()
  other = jax.tree_util.tree_map(lambda v: v * 1.01, model.variables)  # same architecture
  kwargs = dict(eps=EPS, n_iter=3)
  apgd.apgd_attack(model.apply_fn, model.variables, jax.random.key(1), x, y, **kwargs)
  square.square_attack(
      model.apply_fn, model.variables, jax.random.key(1), x, y, eps=EPS, n_queries=5
  )
  fab.fab_attack(model.apply_fn, model.variables, jax.random.key(1), x, y, eps=EPS, n_iter=2)
  before = autoattack.core_cache_sizes()
  for variables in (model.variables, other):
    for eps, n_iter, loss in ((EPS, 4, "ce"), (2 / 255, 5, "dlr"), (EPS, 2, "dlr-targeted")):
      apgd.apgd_attack(
          model.apply_fn,
          variables,
          jax.random.key(2),
          x,
          y,
          eps=eps,
          n_iter=n_iter,
          loss=loss,
          restarts=2,
      )
    square.square_attack(
        model.apply_fn, variables, jax.random.key(2), x, y, eps=2 / 255, n_queries=7
    )
    fab.fab_attack(
        model.apply_fn, variables, jax.random.key(2), x, y, eps=2 / 255, n_iter=3, target_rank=3
    )
  assert autoattack.core_cache_sizes() == before


def test_autoattack_is_at_most_each_of_its_stages():
  model = trained_tiny()
  images, labels = model.test_images[:16], model.test_labels[:16]  # uint8; 2 batches of 8
  key = jax.random.key(3)
  eps = 6 / 255
  result, adversarials = runner.run_autoattack(
      model.apply_fn,
      model.variables,
      key,
      images,
      labels,
      eps=eps,
      batch_size=BATCH,
      n_iter=10,
      square_queries=40,
      return_adversarials=True,
  )
  json.dumps(result)
  assert result["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert result["version"] == "standard" and "standard" in result["name"]
  assert result["settings"]["apgd-t"]["n_target_classes"] == 2  # 3 classes
  accs = [s["robust_accuracy"] for s in result["stages"]]
  assert accs == sorted(accs, reverse=True) and result["robust_accuracy"] == accs[-1]
  assert result["robust_accuracy"] <= result["clean_accuracy"]
  assert 0 < result["robust_accuracy"] < result["clean_accuracy"]  # informative eps
  per = result["per_example"]
  unit = images.astype(np.float32) / 255
  assert_in_ball(adversarials, unit, eps)
  assert result["max_perturbation"] <= eps + 1e-6
  broken = np.array([b is not None for b in per["broken_by"]])
  assert np.array_equal(broken, np.array(per["clean_correct"]) & ~np.array(per["robust"]))
  pred = np.argmax(np.asarray(model.apply_fn(model.variables, adversarials)), -1)
  assert np.all(pred[broken] != labels[broken])
  for stage in result["stages"]:
    assert stage["broken"] == sum(b == stage["name"] for b in per["broken_by"])
    # A stage pays for the points left: its batches are padded to their next power of two.
    left = stage["attacked"]
    assert max(stage["batch_shapes"], default=0) == (
        min(BATCH, 1 << (left - 1).bit_length()) if left else 0
    )
  assert result["square_queries"]["attacked"]["max"] <= 41

  # Each stage run alone with AutoAttack's key for it breaks no point AutoAttack missed.
  robust = np.array(per["robust"])
  alone = {
      "apgd-ce": apgd.apgd_attack(
          model.apply_fn,
          model.variables,
          jax.random.fold_in(key, runner.STAGE_KEYS["apgd-ce"]),
          images,
          labels,
          eps=eps,
          n_iter=10,
          batch_size=BATCH,
      ),
      "apgd-t": apgd.apgd_attack(
          model.apply_fn,
          model.variables,
          jax.random.fold_in(key, runner.STAGE_KEYS["apgd-t"]),
          images,
          labels,
          eps=eps,
          n_iter=10,
          loss="dlr-targeted",
          batch_size=BATCH,
      ),
      "fab-t": fab.fab_attack(
          model.apply_fn,
          model.variables,
          jax.random.fold_in(key, runner.STAGE_KEYS["fab-t"]),
          images,
          labels,
          eps=eps,
          n_iter=10,
          batch_size=BATCH,
      ),
      "square": square.square_attack(
          model.apply_fn,
          model.variables,
          jax.random.fold_in(key, runner.STAGE_KEYS["square"]),
          images,
          labels,
          eps=eps,
          n_queries=40,
          batch_size=BATCH,
      ),
  }
  for name, res in alone.items():
    assert not np.any(robust & ~res["robust"]), name
    assert result["robust_accuracy"] <= 100.0 * res["robust"].mean(), name

  assert result["masking_check"]["checked"] == ["square_beats_white_box"]

  # Fast names itself and shares the stages' keys; the same key gives the same result.
  fast = runner.run_autoattack(
      model.apply_fn,
      model.variables,
      key,
      images,
      labels,
      eps=eps,
      batch_size=BATCH,
      n_iter=10,
      version="fast",
  )
  assert fast["attacks"] == ["apgd-ce", "apgd-t"] and "fast" in fast["name"]
  assert fast["square_queries"] is None and fast["masking_check"] is None
  assert fast["robust_accuracy_after"] == {
      k: result["robust_accuracy_after"][k] for k in ("apgd-ce", "apgd-t")
  }
  again = runner.run_autoattack(
      model.apply_fn,
      model.variables,
      key,
      images,
      labels,
      eps=eps,
      batch_size=BATCH,
      n_iter=10,
      version="fast",
  )
  assert again["per_example"] == fast["per_example"]


def test_gradient_masked_model_is_caught_by_square():
  model, x, y = tiny()
  grad = jax.grad(lambda z: jnp.sum(masked_apply_fn(model.variables, z)))(jnp.asarray(x))
  assert float(jnp.max(jnp.abs(grad))) == 0.0
  clean = np.argmax(np.asarray(masked_apply_fn(model.variables, x)), -1) == y
  assert clean.all()  # still a real classifier
  pgd_acc = pgd_accuracy(masked_apply_fn, model.variables, x, y, eps=EPS, steps=10, restarts=2)
  apgd_acc = (
      100.0
      * apgd.apgd_attack(
          masked_apply_fn, model.variables, jax.random.key(0), x, y, eps=EPS, n_iter=10
      )["robust"].mean()
  )
  sq = square.square_attack(
      masked_apply_fn, model.variables, jax.random.key(0), x, y, eps=EPS, n_queries=50
  )
  square_acc = 100.0 * sq["robust"].mean()
  assert pgd_acc == 100.0 and apgd_acc == 100.0
  assert square_acc <= 50.0
  assert_in_ball(sq["adversarial"], x, EPS)
  assert np.all(sq["queries"][~sq["robust"]] < 50)
  check = masking.masking_check(
      white_box_accuracy=min(pgd_acc, apgd_acc),
      square_accuracy=square_acc,
      pgd_accuracy=pgd_acc,
      apgd_accuracy=apgd_acc,
  )
  assert check["suspicious"]
  assert [f["name"] for f in check["flags"]] == ["square_beats_white_box"]
  assert check["flags"][0]["values"]["white_box_accuracy"] == 100.0
  # AutoAttack itself: only Square breaks points, and its own check says so.
  result = runner.run_autoattack(
      masked_apply_fn,
      model.variables,
      jax.random.key(0),
      x,
      y,
      eps=EPS,
      batch_size=BATCH,
      n_iter=5,
      fab_iter=5,
      square_queries=50,
  )
  after = result["robust_accuracy_after"]
  assert after["apgd-ce"] == after["apgd-t"] == after["fab-t"] == 100.0
  assert after["square"] <= 50.0
  assert set(result["per_example"]["broken_by"]) <= {None, "square"}
  flags = result["masking_check"]["flags"]
  assert result["masking_check"]["suspicious"] and flags[0]["name"] == "square_beats_white_box"
  assert flags[0]["values"]["white_box_accuracy"] == 100.0


def test_random_model_with_eot():
  model, x, y = tiny()
  noisy = noisy_apply_fn(model.model, 0.02)
  kwargs = dict(eps=EPS, batch_size=BATCH, n_iter=5, version="fast")
  result = runner.run_autoattack(
      None, model.variables, jax.random.key(4), x, y, random_apply_fn=noisy, eot=2, **kwargs
  )
  assert result["eot"] == 2 and result["random_model"]
  assert result["robust_accuracy"] <= result["clean_accuracy"]
  again = runner.run_autoattack(
      None, model.variables, jax.random.key(4), x, y, random_apply_fn=noisy, eot=2, **kwargs
  )
  assert again["per_example"] == result["per_example"]
  # EOT is off for a deterministic model.
  assert (
      runner.run_autoattack(
          model.apply_fn, model.variables, jax.random.key(4), x, y, eot=3, **kwargs
      )["eot"]
      == 1
  )


def test_bad_input_names_the_flag():
  model, x, y = tiny()
  run = functools.partial(
      runner.run_autoattack,
      model.apply_fn,
      model.variables,
      jax.random.key(0),
      x,
      y,
      batch_size=BATCH,
  )
  with pytest.raises(ConfigError, match="--autoattack_eps"):
    run(eps=-0.1)
  with pytest.raises(ConfigError, match="--autoattack_eps"):
    run(eps=float("nan"))
  with pytest.raises(ConfigError, match="--autoattack_version"):
    run(eps=EPS, version="plus")
  with pytest.raises(ConfigError, match="--attack_eot"):
    run(eps=EPS, eot=0)
  with pytest.raises(ConfigError, match="--autoattack_num_examples"):
    run(eps=EPS, num_examples=BATCH + 1)
  with pytest.raises(ConfigError, match="--autoattack_num_examples"):
    check_autoattack(num_examples=10_001, available=10_000)
  with pytest.raises(ConfigError, match="--attack_eot"):
    apgd.apgd_attack(model.apply_fn, model.variables, jax.random.key(0), x, y, eps=EPS, eot=0.5)
  nan_variables = {"w": np.full((48, 3), np.nan, np.float32), "b": np.zeros(3, np.float32)}
  with pytest.raises(NkdError, match="not finite"):
    runner.run_autoattack(
        linear_apply_fn,
        nan_variables,
        jax.random.key(0),
        np.zeros((2, 4, 4, 3), np.float32),
        np.zeros(2, np.int32),
        eps=EPS,
    )


def test_suite_entry_with_pgd_cross_checks_and_side_file(tmp_path):
  from nkd.config.evaluation import EvalOptions
  from nkd.evaluation.suite import run_suite

  tiny_model = trained_tiny()
  options = EvalOptions(
      eval_suite="pgd,autoattack",
      pgd_batch_size=16,
      pgd_restarts=2,
      pgd_eps=(0.031,),
      pgd_steps=(2, 4),
      pgd_eps_sweep=(0.0, 1.0),
      pgd_sweep_steps=3,
      pgd_num_examples=16,
      pgd_fgsm=False,
      autoattack_eps=(0.031,),
      autoattack_num_examples=16,
      autoattack_batch_size=16,
      autoattack_iterations=3,
      autoattack_square_queries=10,
  )
  out = run_suite(
      tiny_model.apply_fn,
      tiny_model.variables,
      key=jax.random.key(0),
      test_images=tiny_model.test_images,
      test_labels=tiny_model.test_labels,
      options=options,
      output_dir=str(tmp_path),
  )
  section = out["autoattack"]
  json.dumps(section)
  (entry,) = section["results"]
  assert section["version"] == "standard" and section["num_examples"] == 16
  assert entry["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert "per_example" not in entry
  checked = set(entry["masking_check"]["checked"])
  assert {"square_beats_white_box", "no_zero_at_large_eps"} <= checked
  per_example = json.loads((tmp_path / section["per_example_file"]).read_text())
  assert len(per_example["0.031"]["broken_by"]) == 16


@pytest.mark.parametrize(
    "overrides, flag",
    [
        (dict(autoattack_eps=(-0.1,)), "--autoattack_eps"),
        (dict(autoattack_version="strong"), "--autoattack_version"),
        (dict(attack_eot=0), "--attack_eot"),
    ],
)
def test_autoattack_options_name_the_flag(tmp_path, overrides, flag):
  from helpers import tiny_config

  with pytest.raises(ConfigError, match=flag):
    tiny_config(tmp_path, eval_suite="accuracy,autoattack", **overrides)
