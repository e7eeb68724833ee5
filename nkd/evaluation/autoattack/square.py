"""Square Attack, L-inf (Andriushchenko, Croce, Flammarion & Hein 2020): score-based random
search that needs no gradient, so masked gradients cannot fool it.

As the reference (fra31/auto-attack `square.py`, norm 'Linf', loss 'margin'):
* start: x + eps * s with s = +-1 per (column, channel) (vertical stripes), clipped to [0, 1];
* iteration i: a square of side s_i = max(round(sqrt(p_i H W)), 1) (at most min(H, W)) at a
  uniformly random position gets +-2 eps per channel (random signs) on top of the current best
  point, then the projection onto the eps-ball and [0, 1]; the candidate replaces the best point
  where the margin z_y - max_{i!=y} z_i decreases (a misclassified candidate always does);
* p_i: p_init = 0.8, halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
  (`square_p`); `rescale=True` maps i to i * 10000 / n_queries first (the reference class's
  default); the reference AutoAttack runs Square with rescaling off, as we do by default;
* examples with margin <= 0 are fooled and no longer updated nor queried; one query per
  iteration per example still attacked, plus one for the start (per-example counts returned).

Deviation: the square's position and signs are drawn per example (as the original Square
Attack code), where the reference AutoAttack draws one per iteration for the whole batch; and
the position ranges over all H - s + 1 valid offsets (the reference omits the last one).
Under EOT each query is K forward passes and the margin is taken on the K-draw mean softmax.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nkd.evaluation.autoattack import common

P_INIT = 0.8
N_QUERIES = 5000
HALVING_ITERATIONS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p(iteration, n_queries, p_init=P_INIT, rescale: bool = False):
  """Fraction p of the image a square covers at (0-based) iteration `iteration`:
  p_init / 2^(number of halving iterations < it), it = iteration (or iteration * 10000 /
  n_queries, floored, with `rescale`). Works on Python and traced numbers."""
  xp = jnp if isinstance(iteration, jax.Array) or isinstance(n_queries, jax.Array) else np
  it = (iteration * 10000) // n_queries if rescale else iteration
  halvings = sum((it > b) * 1 for b in HALVING_ITERATIONS)
  return p_init / xp.power(2.0, halvings)


def square_side(p, height: int, width: int):
  """max(round(sqrt(p H W)), 1), at most min(H, W) (the reference's p * n_features / c)."""
  xp = jnp if isinstance(p, jax.Array) else np
  side = xp.round(xp.sqrt(p * height * width)).astype(xp.int32)
  return xp.clip(side, 1, min(height, width))


class _State(NamedTuple):
  i: jax.Array
  x_best: jax.Array
  margin: jax.Array
  queries: jax.Array


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _square_core(
    apply_fn,
    random_apply_fn,
    eot,
    rescale,
    variables,
    example_keys,
    key,
    images,
    labels,
    eps,
    n_queries,
    p_init,
):
  """(best point, its margin (<= 0: fooled), queries per example) on one batch.

  example_keys (B,) draw each example's stripes, squares and signs; `key` the EOT draws."""
  spec = (apply_fn, random_apply_fn, eot)
  n, height, width, channels = images.shape

  def margin_at(x, i):
    return common.margin_of(common.scores(spec, variables, x, jax.random.fold_in(key, i)), labels)

  # Example key k: stripes from fold_in(k, 0), iteration i from fold_in(fold_in(k, 1), i).
  stripes = jax.vmap(
      lambda k: jax.random.rademacher(jax.random.fold_in(k, 0), (1, width, channels), jnp.float32)
  )(example_keys)
  loop_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(example_keys)
  x_best = jnp.clip(images + eps * stripes, 0.0, 1.0)
  state = _State(
      i=jnp.int32(0), x_best=x_best, margin=margin_at(x_best, 0), queries=jnp.ones((n,), jnp.int32)
  )

  def cond(st: _State):
    return (st.i < n_queries) & jnp.any(st.margin > 0)

  def body(st: _State) -> _State:
    side = square_side(square_p(st.i, n_queries, p_init, rescale), height, width)

    def draw(k):
      k_h, k_w, k_s = jax.random.split(jax.random.fold_in(k, st.i), 3)
      return (
          jax.random.randint(k_h, (), 0, height - side + 1),
          jax.random.randint(k_w, (), 0, width - side + 1),
          jax.random.rademacher(k_s, (1, 1, channels), jnp.float32),
      )

    top, left, signs = jax.vmap(draw)(loop_keys)
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    window = (in_rows[:, :, None, None] & in_cols[:, None, :, None]).astype(jnp.float32)
    x_new = common.project(st.x_best + window * 2.0 * eps * signs, images, eps)
    margin = margin_at(x_new, st.i + 1)
    active = st.margin > 0
    better = active & (margin < st.margin)
    return _State(
        i=st.i + 1,
        x_best=jnp.where(common.per_example(better, images), x_new, st.x_best),
        margin=jnp.where(better, margin, st.margin),
        queries=st.queries + active.astype(jnp.int32),
    )

  st = jax.lax.while_loop(cond, body, state)
  return st.x_best, st.margin, st.queries


def square_batch(
    spec,
    variables,
    example_keys,
    key,
    images,
    labels,
    *,
    eps,
    n_queries=N_QUERIES,
    p_init=P_INIT,
    rescale=False,
):
  """One run of the core on one batch: (best point, margin, queries) as jax arrays."""
  return _square_core(
      *spec,
      bool(rescale),
      variables,
      example_keys,
      key,
      jnp.asarray(images, jnp.float32),
      jnp.asarray(labels, jnp.int32),
      np.float32(eps),
      np.int32(n_queries),
      np.float32(p_init),
  )


def square_attack(
    apply_fn,
    variables,
    key,
    images,
    labels,
    *,
    eps: float,
    n_queries: int = N_QUERIES,
    p_init: float = P_INIT,
    rescale: bool = False,
    restarts: int = 1,
    random_apply_fn=None,
    eot: int = 1,
    batch_size: int | None = None,
) -> dict:
  """Square Attack (images uint8 or [0, 1] float NHWC, padded batches of `batch_size`, None:
  one batch). Restart r uses run key fold_in(key, r) (`common.run_keys`, per-example keys) and
  updates only points still robust; with key fold_in(aa_key, 4) restart 0 is AutoAttack's
  Square stage example by example. Returns numpy arrays {"adversarial" (inside the eps-ball
  and [0, 1]), "robust" (correct clean and after the attack), "clean_correct", "queries" (per
  example, summed over the restarts that attacked it; 0 for points misclassified clean)}."""
  common.check_arguments(eps=eps, eot=eot, n_queries=n_queries, restarts=restarts)
  if not 0 < p_init <= 1:
    raise ValueError(f"p_init must be in (0, 1], got {p_init}")
  spec, x, y, size, clean, clean_correct = common.prepare(
      apply_fn, random_apply_fn, eot, variables, key, images, labels, batch_size
  )
  robust = clean_correct.copy()
  adversarial = x.copy()
  queries = np.zeros(len(y), np.int64)
  for r in range(int(restarts)):
    if not robust.any():
      break

    def call(idx, keys, attack_key):
      return square_batch(
          spec,
          variables,
          keys,
          attack_key,
          x[idx],
          y[idx],
          eps=eps,
          n_queries=n_queries,
          p_init=p_init,
          rescale=rescale,
      )

    for start, stop, (adv, margin, used) in common.map_batches(
        len(y), size, jax.random.fold_in(key, r), call
    ):
      still = robust[start:stop]
      queries[start:stop] += np.where(still, used, 0)
      fooled = still & (margin <= 0)
      adversarial[start:stop][fooled] = adv[fooled]
      robust[start:stop] = still & ~fooled
  return {
      "adversarial": adversarial,
      "robust": robust,
      "clean_correct": clean_correct,
      "queries": queries,
  }
