"""Pieces shared by the AutoAttack attacks: losses (cross-entropy, DLR of Croce & Hein 2020 eq. 5,
targeted DLR), the model seen through EOT, the judge, the arguments' checks.

The cores see a model as the static triple `(apply_fn, random_apply_fn, eot)` (`model_spec`):
a deterministic `apply_fn(variables, images)`, or `random_apply_fn(variables, images, key)`
with K = eot draws, whose gradients are averaged and whose scores are log(mean_k softmax(z_k)).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nkd.config.evaluation import check_autoattack
from nkd.data.augment import to_unit_float
from nkd.errors import ConfigError, NkdError
from nkd.evaluation import batching

# Loss indices of the APGD core (a traced `lax.switch` index: one compilation serves all).
LOSSES = ("ce", "dlr", "dlr-targeted")
DLR_EPS = 1e-12  # the reference's guard in the DLR denominators


# ---------------------------------------------------------------------------------------------
# Losses (per example, on logits (N, C)).


def _sorted_desc(logits: jax.Array) -> jax.Array:
  return -jnp.sort(-logits, axis=-1)


def _kth_largest(sorted_desc: jax.Array, k: int) -> jax.Array:
  """The k-th largest logit (1-based); with fewer than k classes, the smallest one."""
  return sorted_desc[:, min(k, sorted_desc.shape[-1]) - 1]


def true_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def best_other_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """max_{i != y} z_i."""
  mask = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)


def ce_loss(logits: jax.Array, labels: jax.Array, targets=None) -> jax.Array:
  """Cross-entropy of the true label (APGD-CE maximises it)."""
  del targets
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def dlr_loss(logits: jax.Array, labels: jax.Array, targets=None) -> jax.Array:
  """Difference of Logits Ratio, -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12).

  pi sorts the logits in decreasing order. Invariant to shifting and to positive scaling of the
  logits (Croce & Hein 2020, sec. 4). With only 2 classes z_pi2 stands in for z_pi3 (the
  reference needs >= 3 classes)."""
  del targets
  top = _sorted_desc(logits)
  return -(true_logit(logits, labels) - best_other_logit(logits, labels)) / (
      top[:, 0] - _kth_largest(top, 3) + DLR_EPS
  )


def dlr_targeted_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
  """Targeted DLR, -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) (APGD-T).

  With fewer than 4 classes the smallest logit stands in for the missing ones (with 3 classes
  the denominator is z_pi1 - z_pi3; the reference refuses fewer than 4 classes)."""
  top = _sorted_desc(logits)
  return -(true_logit(logits, labels) - true_logit(logits, targets)) / (
      top[:, 0] - 0.5 * (_kth_largest(top, 3) + _kth_largest(top, 4)) + DLR_EPS
  )


def target_minus_true(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
  """z_t - z_y: its zero level set is the boundary FAB-T linearises."""
  return true_logit(logits, targets) - true_logit(logits, labels)


def margin_of(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """z_y - max_{i!=y} z_i: > 0 iff classified correctly (Square's loss)."""
  return true_logit(scores, labels) - best_other_logit(scores, labels)


LOSS_FNS = (ce_loss, dlr_loss, dlr_targeted_loss)


# ---------------------------------------------------------------------------------------------
# The model as the attacks see it.


def model_spec(apply_fn, random_apply_fn=None, eot: int = 1) -> tuple[Any, Any, int]:
  """The static triple of the cores: EOT is off (K = 1) for a deterministic model."""
  if random_apply_fn is None:
    if apply_fn is None:
      raise ValueError("need apply_fn or random_apply_fn")
    return apply_fn, None, 1
  return None, random_apply_fn, int(eot)


def _draw_logits(spec, variables, x, key, k):
  apply_fn, random_apply_fn, _ = spec
  if random_apply_fn is None:
    return apply_fn(variables, x).astype(jnp.float32)
  return random_apply_fn(variables, x, jax.random.fold_in(key, k)).astype(jnp.float32)


def scores(spec, variables, x: jax.Array, key: jax.Array) -> jax.Array:
  """Logits (deterministic) or log of the K-draw mean softmax (random), (N, C)."""
  _, random_apply_fn, eot = spec
  if random_apply_fn is None:
    return _draw_logits(spec, variables, x, key, 0)

  def body(k, acc):
    return jnp.logaddexp(acc, jax.nn.log_softmax(_draw_logits(spec, variables, x, key, k)))

  first = jax.nn.log_softmax(_draw_logits(spec, variables, x, key, 0))
  return jax.lax.fori_loop(1, eot, body, first) - math.log(eot)


def loss_grad_scores(
    spec, variables, x: jax.Array, key: jax.Array, loss_fn: Callable[[jax.Array], jax.Array]
):
  """(per-example loss (N,), d loss / d x, scores), each the mean over the K draws.

  One forward and one backward pass per draw; examples do not interact (eval mode), so the
  gradient of the summed loss is the per-example gradient."""
  _, random_apply_fn, eot = spec

  def one(k):
    def total(xx):
      logits = _draw_logits(spec, variables, xx, key, k)
      losses = loss_fn(logits)
      return jnp.sum(losses), (losses, logits)

    (_, (losses, logits)), grad = jax.value_and_grad(total, has_aux=True)(x)
    return losses, grad, logits

  if random_apply_fn is None:
    return one(0)

  losses, grad, logits = one(0)
  init = (losses, grad, jax.nn.log_softmax(logits))

  def body(k, acc):
    l, g, z = one(k)
    return acc[0] + l, acc[1] + g, jnp.logaddexp(acc[2], jax.nn.log_softmax(z))

  total_loss, total_grad, log_sum = jax.lax.fori_loop(1, eot, body, init)
  return total_loss / eot, total_grad / eot, log_sum - math.log(eot)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _judge_core(apply_fn, random_apply_fn, eot, variables, key, x):
  return scores((apply_fn, random_apply_fn, eot), variables, x, key)


def clean_key(key: jax.Array) -> jax.Array:
  """The key of a standalone attack's clean judge (restarts use fold_in(key, r), r >= 0)."""
  return jax.random.fold_in(key, 2**32 - 1)


def run_keys(run_key: jax.Array, indices, batch_index: int = 0):
  """(per-example keys (B,), the batch's attack key, the batch's judge key) of one run.

  Example i's random start and random search draw from fold_in(examples root, i), i its index
  in the whole evaluated set: an example's attack does not depend on which batch it lands in
  nor on the batch size (deterministic models). The batch keys feed EOT draws and the judge."""
  examples_root, batches_root = jax.random.split(run_key)
  indices = jnp.asarray(np.asarray(indices, np.uint32))
  keys = jax.vmap(lambda i: jax.random.fold_in(examples_root, i))(indices)
  attack_key, judge_key = jax.random.split(jax.random.fold_in(batches_root, batch_index))
  return keys, attack_key, judge_key


def judge_scores(spec, variables, key, x) -> jax.Array:
  """Jitted `scores` of one batch: the prediction every attack and the runner are judged by."""
  return _judge_core(*spec, variables, key, jnp.asarray(x, jnp.float32))


def batched_scores(spec, variables, key, x: np.ndarray, size: int) -> np.ndarray:
  """Judge scores of a whole host array in padded batches of `size` (batch b: fold_in(key, b))."""
  out = []
  for b, start, stop in batching.padded_batches(len(x), size):
    out.append(
        np.asarray(
            judge_scores(
                spec, variables, jax.random.fold_in(key, b), batching.pad_batch(x[start:stop], size)
            )
        )[: stop - start]
    )
  return np.concatenate(out)


def map_batches(n: int, size: int, run_key: jax.Array, call):
  """For each padded batch of range(n): yields (start, stop, outputs of call(indices,
  example_keys, attack_key) cut to the batch's real rows, as numpy arrays)."""
  for b, start, stop in batching.padded_batches(n, size):
    indices = batching.pad_batch(np.arange(start, stop), size)
    keys, attack_key, _ = run_keys(run_key, indices, b)
    outputs = call(indices, keys, attack_key)
    yield start, stop, [np.asarray(o)[: stop - start] for o in outputs]


def batch_size_for(n: int, batch_size) -> int:
  """None: the whole set as one batch."""
  return n if batch_size is None else batching.effective_batch_size(n, batch_size)


# ---------------------------------------------------------------------------------------------
# Geometry.


def project(x_adv: jax.Array, images: jax.Array, eps) -> jax.Array:
  """Onto the L-inf eps-ball around `images`, then onto [0, 1]."""
  return jnp.clip(jnp.clip(x_adv, images - eps, images + eps), 0.0, 1.0)


def linf_norm(delta: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(delta.reshape(delta.shape[0], -1)), axis=-1)


def per_example(v: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes (N,) to broadcast against an (N, ...) batch."""
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


def inside_ball(adv: np.ndarray, images: np.ndarray, eps: float, atol: float = 1e-6) -> np.ndarray:
  """Bool (N,): within eps (+ float32 rounding) in L-inf and inside [0, 1]."""
  adv, images = np.asarray(adv, np.float32), np.asarray(images, np.float32)
  flat = (adv - images).reshape(len(adv), -1)
  return (
      (np.max(np.abs(flat), axis=-1) <= eps + atol)
      & (adv.reshape(len(adv), -1).min(-1) >= 0.0)
      & (adv.reshape(len(adv), -1).max(-1) <= 1.0)
  )


# ---------------------------------------------------------------------------------------------
# Arguments.


def check_positive_int(value, option: str) -> None:
  if isinstance(value, bool) or int(value) != value or value < 1:
    raise ConfigError(f"{option} must be an integer >= 1, got {value}")


def check_arguments(*, eps, eot, **counts) -> None:
  """An attack's arguments: eps and eot as their flags (`check_autoattack`), and each of
  `counts` (iterations, queries, restarts) a positive integer."""
  check_autoattack(eps=eps, eot=eot)
  for name, value in counts.items():
    check_positive_int(value, name)


def check_finite_scores(values: np.ndarray) -> None:
  bad = ~np.all(np.isfinite(values), axis=-1)
  if bad.any():
    raise NkdError(
        f"the model's logits are not finite for {int(bad.sum())} of {len(bad)} "
        f"examples (NaN or inf): cannot attack it"
    )


def targets_by_rank(clean_scores: np.ndarray, rank: int) -> np.ndarray:
  """The class with the `rank`-th largest clean score (rank 1: the top one), int32 (N,).

  For a correctly classified point ranks 2.. are the other classes by decreasing score, as the
  reference's `output.sort()[1][:, -target_class]`."""
  order = np.argsort(-np.asarray(clean_scores), axis=-1, kind="stable")
  return order[:, rank - 1].astype(np.int32)


def prepare(apply_fn, random_apply_fn, eot, variables, key, images, labels, batch_size):
  """What every attack starts from: (model spec, [0, 1] float images, int32 labels, batch
  size, clean scores, clean-correct mask); non-finite logits are refused."""
  spec = model_spec(apply_fn, random_apply_fn, eot)
  x = to_unit_float(np.asarray(images))
  y = np.asarray(labels, np.int32)
  size = batch_size_for(len(y), batch_size)
  clean = batched_scores(spec, variables, clean_key(key), x, size)
  check_finite_scores(clean)
  return spec, x, y, size, clean, np.argmax(clean, -1) == y
