"""APGD, L-inf (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1).

Per iteration: one forward and one backward pass (K of each under EOT), as PGD. The update is
  z = P(x + eta sign(grad)),  x_next = P(x + alpha (z - x) + (1 - alpha) (x - x_prev))
with momentum alpha = 0.75 (1 on the first step), initial step eta = 2 eps, P the projection
onto the eps-ball and [0, 1]. At the checkpoints w_j (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = p_j N_iter) the step is halved, and the
iterate restarted from the best point so far, for each example where
  1. the loss increased in at most rho = 0.75 of the steps since the last checkpoint, or
  2. the step was not halved at the last checkpoint and the best loss has not improved since.
The best loss, the best-loss point and the last misclassified point are tracked per example.

The schedule and the halving rule are the small pure functions `checkpoint_schedule`,
`should_halve` and `schedule_step`; the jitted core and `simulate_step_sizes` (which replays a
hand-written loss trace) share them. As the reference, the checkpoint intervals are integers:
max(floor(0.22 N), 1) first, shrinking by max(floor(0.03 N), 1) down to max(floor(0.06 N), 1)
(exact integer arithmetic; for N = 100: 22, 41, 57, 70, 80, 87, 93, 99).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nkd.evaluation.autoattack import common

MOMENTUM = 0.75
RHO = 0.75
INITIAL_STEP = 2.0  # times eps


# ---------------------------------------------------------------------------------------------
# Checkpoints and step-size halving: pure functions.


def interval_constants(n_iter):
  """(first interval, decrement, minimum interval) in iterations, for N_iter = n_iter:
  max(floor(0.22 N), 1), max(floor(0.03 N), 1), max(floor(0.06 N), 1). Works on Python and
  traced integers."""
  xp = jnp if isinstance(n_iter, jax.Array) else np
  return (
      xp.maximum((22 * n_iter) // 100, 1),
      xp.maximum((3 * n_iter) // 100, 1),
      xp.maximum((6 * n_iter) // 100, 1),
  )


def next_interval(interval, n_iter):
  """p_{j+1} - p_j = max(p_j - p_{j-1} - 0.03, 0.06), in iterations."""
  _, decrement, minimum = interval_constants(n_iter)
  xp = jnp if isinstance(interval, jax.Array) or isinstance(n_iter, jax.Array) else np
  return xp.maximum(interval - decrement, minimum)


def checkpoint_fractions(count: int) -> list[float]:
  """The paper's p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
  p = [0.0, 0.22]
  while len(p) < count:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  return p[:count]


def checkpoint_schedule(n_iter: int) -> list[int]:
  """The iterations w_1 < w_2 < ... <= n_iter after which the halving conditions are checked."""
  n_iter = int(n_iter)
  interval = int(interval_constants(n_iter)[0])
  out, w = [], 0
  while w + interval <= n_iter:
    w += interval
    out.append(w)
    interval = int(next_interval(interval, n_iter))
  return out


def should_halve(num_increases, interval, reduced_last, best_at_last_check, best_now, rho=RHO):
  """Algorithm 1's two conditions at a checkpoint, per example (bool array):

  1. sum_{i=w_{j-1}}^{w_j - 1} 1[f(x_{i+1}) > f(x_i)] <= rho (w_j - w_{j-1}): the loss went up
     in at most a fraction rho of the steps (the reference's `<=`; the paper writes `<`);
  2. the step was not halved at w_{j-1} and f_max did not improve since w_{j-1}.
  (The reference starts with "halved at w_0" true, so condition 2 cannot fire at w_1.)"""
  oscillating = num_increases <= rho * interval
  stalled = jnp.logical_not(reduced_last) & (best_at_last_check >= best_now)
  return oscillating | stalled


class Schedule(NamedTuple):
  """Per-example step-size state (arrays (N,)) and the shared checkpoint counters (scalars)."""

  step: jax.Array
  loss_prev: jax.Array
  increases: jax.Array
  best: jax.Array
  best_at_last_check: jax.Array
  reduced_last: jax.Array
  since_check: jax.Array
  interval: jax.Array


def init_schedule(loss0, eps, n_iter) -> Schedule:
  loss0 = jnp.asarray(loss0, jnp.float32)
  n = jnp.asarray(n_iter, jnp.int32)
  return Schedule(
      step=jnp.full(loss0.shape, INITIAL_STEP, jnp.float32) * eps,
      loss_prev=loss0,
      increases=jnp.zeros(loss0.shape, jnp.int32),
      best=loss0,
      best_at_last_check=loss0,
      reduced_last=jnp.ones(loss0.shape, bool),
      since_check=jnp.int32(0),
      interval=interval_constants(n)[0].astype(jnp.int32),
  )


def schedule_step(s: Schedule, loss, n_iter, rho=RHO):
  """Books the loss f(x_{i+1}) of a new iterate: (new schedule, improved, halve), where
  `improved` marks a new best loss and `halve` a halving (and restart from the best point)."""
  loss = jnp.asarray(loss, jnp.float32)
  improved = loss > s.best
  best = jnp.where(improved, loss, s.best)
  increases = s.increases + (loss > s.loss_prev).astype(jnp.int32)
  since_check = s.since_check + 1
  at_check = since_check == s.interval
  halve = at_check & should_halve(
      increases, s.interval, s.reduced_last, s.best_at_last_check, best, rho
  )
  new = Schedule(
      step=jnp.where(halve, s.step / 2, s.step),
      loss_prev=loss,
      increases=jnp.where(at_check, 0, increases),
      best=best,
      best_at_last_check=jnp.where(at_check, best, s.best_at_last_check),
      reduced_last=jnp.where(at_check, halve, s.reduced_last),
      since_check=jnp.where(at_check, 0, since_check),
      interval=jnp.where(
          at_check, next_interval(s.interval, jnp.asarray(n_iter, jnp.int32)), s.interval
      ).astype(jnp.int32),
  )
  return new, improved, halve


def simulate_step_sizes(loss_trace, eps: float = 1.0, rho: float = RHO):
  """Replays the schedule on a hand-written loss trace f(x_0), ..., f(x_N) (shape (N+1,) or
  (N+1, B)): returns (step sizes after each iteration (N, ...), iterations i (1-based, the
  iterate x_i just booked) where some example halved)."""
  trace = np.asarray(loss_trace, np.float32)
  n_iter = len(trace) - 1
  s = init_schedule(trace[0], eps, n_iter)
  steps, halvings = [], []
  for i in range(1, n_iter + 1):
    s, _, halve = schedule_step(s, trace[i], n_iter, rho)
    steps.append(np.asarray(s.step))
    if np.any(halve):
      halvings.append(i)
  return np.stack(steps), halvings


# ---------------------------------------------------------------------------------------------
# The jitted core.


class _State(NamedTuple):
  x: jax.Array
  x_prev: jax.Array
  grad: jax.Array
  x_best: jax.Array
  grad_best: jax.Array
  x_adv: jax.Array
  fooled: jax.Array
  schedule: Schedule


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _apgd_core(
    apply_fn,
    random_apply_fn,
    eot,
    variables,
    example_keys,
    key,
    images,
    labels,
    targets,
    loss_index,
    eps,
    n_iter,
    rho,
):
  """One APGD run from a random start on one batch: (adversarial, fooled, best loss).

  example_keys (B,) draw each example's random start; `key` the EOT draws.

  `adversarial` is the last misclassified iterate where some iterate was misclassified
  (`fooled`), else the best-loss point; loss_index picks ce / dlr / dlr-targeted
  (`common.LOSSES`). eps, n_iter, rho and the loss are traced: one compilation per
  (model, batch shape)."""
  spec = (apply_fn, random_apply_fn, eot)

  def loss_fn(logits):
    return jax.lax.switch(
        loss_index,
        [functools.partial(f, labels=labels, targets=targets) for f in common.LOSS_FNS],
        logits,
    )

  def evaluate(x, i):
    loss, grad, scores = common.loss_grad_scores(
        spec, variables, x, jax.random.fold_in(key, i), loss_fn
    )
    return loss, grad, jnp.argmax(scores, axis=-1) != labels

  # Reference start: x + eps * t / ||t||_inf, t uniform in [-1, 1]^d.
  t = jax.vmap(lambda k: jax.random.uniform(k, images.shape[1:], jnp.float32, -1.0, 1.0))(
      example_keys
  )
  x0 = jnp.clip(images + eps * t / common.per_example(common.linf_norm(t) + 1e-12, t), 0.0, 1.0)
  loss0, grad0, wrong0 = evaluate(x0, 0)
  state = _State(
      x=x0,
      x_prev=x0,
      grad=grad0,
      x_best=x0,
      grad_best=grad0,
      x_adv=x0,
      fooled=wrong0,
      schedule=init_schedule(loss0, eps, n_iter),
  )

  # The eps-ball within [0, 1] as one box: one clip per projection.
  low, high = jnp.maximum(images - eps, 0.0), jnp.minimum(images + eps, 1.0)

  def restart(args):
    halve, x_best, grad_best, x_new, grad = args
    halve_b = common.per_example(halve, images)
    return jnp.where(halve_b, x_best, x_new), jnp.where(halve_b, grad_best, grad)

  def body(i, st: _State) -> _State:
    alpha = jnp.where(i == 0, 1.0, MOMENTUM)
    step = common.per_example(st.schedule.step, images)
    z = jnp.clip(st.x + step * jnp.sign(st.grad), low, high)
    x_new = jnp.clip(st.x + alpha * (z - st.x) + (1.0 - alpha) * (st.x - st.x_prev), low, high)
    loss, grad, wrong = evaluate(x_new, i + 1)
    schedule, improved, halve = schedule_step(st.schedule, loss, n_iter, rho)
    improved_b = common.per_example(improved, images)
    x_best = jnp.where(improved_b, x_new, st.x_best)
    grad_best = jnp.where(improved_b, grad, st.grad_best)
    # Halvings happen only at checkpoints: skip the selects on other iterations.
    x_next, grad_next = jax.lax.cond(
        jnp.any(halve),
        restart,
        lambda args: (args[3], args[4]),
        (halve, x_best, grad_best, x_new, grad),
    )
    return _State(
        x=x_next,
        x_prev=st.x,
        grad=grad_next,
        x_best=x_best,
        grad_best=grad_best,
        x_adv=jnp.where(common.per_example(wrong, images), x_new, st.x_adv),
        fooled=st.fooled | wrong,
        schedule=schedule,
    )

  st = jax.lax.fori_loop(0, n_iter, body, state)
  adversarial = jnp.where(common.per_example(st.fooled, images), st.x_adv, st.x_best)
  return adversarial, st.fooled, st.schedule.best


def apgd_batch(
    spec,
    variables,
    example_keys,
    key,
    images,
    labels,
    *,
    eps,
    n_iter=100,
    loss="ce",
    targets=None,
    rho=RHO,
):
  """One run of the core on one batch (host or device arrays): (adversarial, fooled, best
  loss) as jax arrays."""
  labels = jnp.asarray(labels, jnp.int32)
  targets = labels if targets is None else jnp.asarray(targets, jnp.int32)
  return _apgd_core(
      *spec,
      variables,
      example_keys,
      key,
      jnp.asarray(images, jnp.float32),
      labels,
      targets,
      np.int32(common.LOSSES.index(loss)),
      np.float32(eps),
      np.int32(n_iter),
      np.float32(rho),
  )


def check_apgd_options(*, eps, n_iter, loss, restarts, eot) -> None:
  common.check_arguments(eps=eps, eot=eot, n_iter=n_iter, restarts=restarts)
  if loss not in common.LOSSES:
    raise ValueError(f"loss must be one of {common.LOSSES}, got {loss!r}")


def apgd_attack(
    apply_fn,
    variables,
    key,
    images,
    labels,
    *,
    eps: float,
    n_iter: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    targets=None,
    target_rank: int = 2,
    rho: float = RHO,
    random_apply_fn=None,
    eot: int = 1,
    batch_size: int | None = None,
) -> dict:
  """APGD-CE (loss="ce"), APGD-DLR ("dlr") or APGD on the targeted DLR ("dlr-targeted",
  towards `targets`, or else the class of clean rank `target_rank`, 2 = the runner-up).

  images: uint8 or [0, 1] float NHWC, attacked in padded batches of `batch_size` (None: one
  batch). Restart r attacks every point with run key fold_in(key, r) (`common.run_keys`:
  example i starts from its own key, so results do not depend on the batch size); with key
  fold_in(aa_key, 1), restart 0 is AutoAttack's APGD-CE stage example by example. A random
  model (random_apply_fn) is attacked with EOT over `eot` draws. Returns numpy arrays
  {"adversarial": float32 NHWC inside the eps-ball and [0, 1] (the last misclassified iterate,
  else the best-loss point of the first restart, else the clean image where misclassified
  clean), "robust": bool (N,) (correct clean and at every iterate of every restart),
  "clean_correct": bool (N,)}."""
  check_apgd_options(eps=eps, n_iter=n_iter, loss=loss, restarts=restarts, eot=eot)
  spec, x, y, size, clean, clean_correct = common.prepare(
      apply_fn, random_apply_fn, eot, variables, key, images, labels, batch_size
  )
  if targets is None:
    targets = common.targets_by_rank(clean, target_rank) if loss == "dlr-targeted" else y
  targets = np.asarray(targets, np.int32)
  robust = clean_correct.copy()
  adversarial = x.copy()
  for r in range(int(restarts)):

    def call(idx, keys, attack_key):
      return apgd_batch(
          spec,
          variables,
          keys,
          attack_key,
          x[idx],
          y[idx],
          eps=eps,
          n_iter=n_iter,
          loss=loss,
          targets=targets[idx],
          rho=rho,
      )[:2]

    for start, stop, (adv, fooled) in common.map_batches(
        len(y), size, jax.random.fold_in(key, r), call
    ):
      still = robust[start:stop]
      take = still & (fooled | (r == 0))
      adversarial[start:stop][take] = adv[take]
      robust[start:stop] = still & ~fooled
  return {"adversarial": adversarial, "robust": robust, "clean_correct": clean_correct}
