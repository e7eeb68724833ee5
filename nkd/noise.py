"""The paper's noise sources, each a pure function `f(key, x, *, level, ...) -> x'` of an
explicit PRNG key, safe under `jax.jit` (levels and modes are static keyword arguments; bad ones
raise ValueError naming them). Level 0 returns `x` itself: a source switched off is bit-exact
and free. The train step gives each source its own stream, `nkd.keys.step_key_for(step_key,
name)`, so adding one never shifts another's random numbers.

  signal_noise          z' = (1 + d) z, d ~ N(0, sigma^2) per logit (or per sample)
  gaussian_input_noise  x' = x + d, d ~ N(0, sigma^2) per pixel in [0, 1] (clipped if asked)
  corrupt_labels        y' = (y + k) mod C, k ~ U{1, ..., C-1}, with probability p
  swap_probs            close teacher probabilities swapped, with probability p per sample

Where the paper is ambiguous, docs/FIDELITY.md gives our reading and the flag for the other.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nkd.config.noise import SWAP_MODES

# ----------------------------------------------------------------------------
# Argument checks (eager, on static Python values).


def _check_nonneg(name: str, value: Any) -> float:
  value = float(value)
  if not value >= 0:  # also rejects NaN
    raise ValueError(f"{name} must be >= 0, got {value:g}")
  return value


def _check_prob(name: str, value: Any) -> float:
  value = float(value)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value:g}")
  return value


def _check_floating(name: str, x: jax.Array) -> None:
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype, got {jnp.asarray(x).dtype}")


# ----------------------------------------------------------------------------
# Signal-dependent teacher-logit noise.


def signal_noise(
    key: jax.Array,
    logits: jax.Array,
    *,
    sigma: float,
    per_sample: bool = False,
) -> jax.Array:
  """Signal-dependent noise `z' = (1 + d) * z`, `d ~ N(0, sigma^2)`.

  Args:
    key: PRNG key.
    logits: floating array, batch first (`(B, C)` for teacher logits).
    sigma: std of `d`; `0` returns `logits` itself.
    per_sample: draw one `d` per sample (leading axis), shared by all its
      logits, instead of one per element.

  Returns:
    Noisy logits, same shape and dtype. The train step puts it on the raw logits, then
    divides by the temperature (the other order differs only in rounding).
  """
  sigma = _check_nonneg("sigma", sigma)
  _check_floating("logits", logits)
  if per_sample and jnp.ndim(logits) < 1:
    raise ValueError("logits must have a batch axis when per_sample=True, got a scalar")
  if sigma == 0:
    return logits
  shape = jnp.shape(logits)
  if per_sample:
    shape = shape[:1] + (1,) * (len(shape) - 1)
  dtype = jnp.asarray(logits).dtype
  d = sigma * jax.random.normal(key, shape, jnp.float32)
  return ((1.0 + d) * jnp.asarray(logits, jnp.float32)).astype(dtype)


# ----------------------------------------------------------------------------
# Soft Randomization input noise.


def gaussian_input_noise(
    key: jax.Array,
    images: jax.Array,
    *,
    sigma: float,
    clip: bool = False,
) -> jax.Array:
  """Additive pixel noise `x + d`, `d ~ N(0, sigma^2)` per pixel.

  Args:
    key: PRNG key.
    images: floating images in [0, 1], any layout (NHWC in nkd).
    sigma: noise std in pixel units; `0` returns `images` itself.
    clip: clip the result to [0, 1] (the paper does not say; default off).

  Returns:
    Noisy images, same shape and dtype as `images`.
  """
  sigma = _check_nonneg("sigma", sigma)
  _check_floating("images", images)
  if sigma == 0:
    return images
  dtype = jnp.asarray(images).dtype
  noisy = jnp.asarray(images, jnp.float32) + sigma * jax.random.normal(
      key, jnp.shape(images), jnp.float32
  )
  if clip:
    noisy = jnp.clip(noisy, 0.0, 1.0)
  return noisy.astype(dtype)


# ----------------------------------------------------------------------------
# Random label corruption.


def corrupt_labels(
    key: jax.Array,
    labels: jax.Array,
    *,
    p: float,
    num_classes: int,
) -> jax.Array:
  """Replace each label, with probability `p`, by a uniformly drawn wrong class.

  A corrupted label is `(y + k) mod num_classes` with `k` uniform in
  `1 .. num_classes - 1`: never the true label, each wrong class equally likely.

  Args:
    key: PRNG key.
    labels: integer class ids in `[0, num_classes)`, any shape.
    p: corruption probability per label; `0` returns `labels` itself.
    num_classes: number of classes, `>= 2`.

  Returns:
    Labels of the same shape and dtype.
  """
  p = _check_prob("p", p)
  try:
    num_classes = operator.index(num_classes)
  except TypeError:
    raise ValueError(f"num_classes must be an int, got {num_classes!r}") from None
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  dtype = jnp.asarray(labels).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"labels must have an integer dtype, got {dtype}")
  if p == 0:
    return labels
  flip_key, class_key = jax.random.split(key)
  shape = jnp.shape(labels)
  flip = jax.random.bernoulli(flip_key, p, shape)
  offset = jax.random.randint(class_key, shape, 1, num_classes, jnp.int32)
  labels32 = jnp.asarray(labels).astype(jnp.int32)
  wrong = (labels32 + offset) % num_classes
  return jnp.where(flip, wrong, labels32).astype(dtype)


# ----------------------------------------------------------------------------
# Random swapping of teacher probabilities.


def swap_probs(
    key: jax.Array,
    probs: jax.Array,
    *,
    p: float,
    threshold: float,
    mode: str,
) -> jax.Array:
  """Randomly swap close teacher probabilities within each row.

  Each row (sample) is eligible with probability `p` (one Bernoulli draw per
  row). Eligible rows are processed in sorted order: `order` is the row's
  indices sorted by descending probability, ties broken by lower index first
  (a stable sort), so `s = probs[order]` is non-increasing. Then:

  * `mode="top2"`: if `s[0] - s[1] < threshold`, swap `s[0]` and `s[1]`.
  * `mode="all"`: for `k = 0, 1, ..., C-2` in turn, if
    `s[k] - s[k+1] < threshold`, swap `s[k]` and `s[k+1]`. Each test uses
    the current values, after the swaps of earlier pairs, so a value can travel
    down several ranks (`[.5, .3, .2]` with a huge threshold becomes
    `[.3, .2, .5]`). `s[k]` is then the old `s[k]` or a value carried
    down from above, never smaller than `s[k+1]`, so the difference is >= 0.

  `top2` is exactly the first step of `all`. The values are written back
  to the positions they were sorted from (`out[order] = s`). The comparison
  is strict, so `threshold=0` never swaps. Swapping tied values is a no-op,
  so ties give the same output whichever tied index the sort puts first. Only
  values within a row are permuted: each row keeps exactly the same multiset
  of values (its sum changes at most by float summation order), and rows not
  eligible, or with nothing to swap, are returned bit for bit.

  Args:
    key: PRNG key.
    probs: `(B, C)` floating rows of softened teacher probabilities, `C >= 2`.
    p: probability that a row is eligible; `0` returns `probs` itself.
    threshold: swap a pair only if its difference is `< threshold` (`>= 0`).
    mode: `"top2"` or `"all"`.

  Returns:
    Probabilities of the same shape and dtype.
  """
  p = _check_prob("p", p)
  threshold = _check_nonneg("threshold", threshold)
  if mode not in SWAP_MODES:
    raise ValueError(f"mode must be one of {SWAP_MODES}, got {mode!r}")
  _check_floating("probs", probs)
  if jnp.ndim(probs) != 2 or jnp.shape(probs)[1] < 2:
    raise ValueError(f"probs must have shape (B, C) with C >= 2, got {jnp.shape(probs)}")
  if p == 0:
    return probs
  batch, num_classes = jnp.shape(probs)
  eligible = jax.random.bernoulli(key, p, (batch,))
  # Stable ascending sort of -probs: descending probability, lower index first.
  probs = jnp.asarray(probs)
  order = jnp.argsort(-probs, axis=1, stable=True)
  values = jnp.take_along_axis(probs, order, axis=1)

  def swap_pair(k, vals):
    pair = lax.dynamic_slice_in_dim(vals, k, 2, axis=1)  # (B, 2): s[k], s[k+1]
    swap = eligible & (pair[:, 0] - pair[:, 1] < threshold)
    pair = jnp.where(swap[:, None], pair[:, ::-1], pair)
    return lax.dynamic_update_slice_in_dim(vals, pair, k, axis=1)

  num_pairs = 1 if mode == "top2" else num_classes - 1
  values = lax.fori_loop(0, num_pairs, swap_pair, values)
  # out[order[j]] = values[j]: gather through the inverse permutation.
  inverse = jnp.argsort(order, axis=1)
  return jnp.take_along_axis(values, inverse, axis=1)
