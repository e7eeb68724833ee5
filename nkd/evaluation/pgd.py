"""L-infinity PGD (Madry et al.) and FGSM, in pixel units ([0, 1] images), eval mode.

An attack is random start, sign-gradient step on a loss ("ce" or the margin max_{j != y} z_j -
z_y) and projection onto the eps-ball and [0, 1], in a `lax.fori_loop`; one compiled core per
(apply_fn, loss, batch shape). Robust accuracy is per-example worst case over restarts; the
paper's number (the worst restart's accuracy) is `worst_restart_accuracy`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from nkd import keys as keys_lib
from nkd.config.evaluation import DEFAULT_SWEEP_EPS, PGD_LOSSES as LOSSES
from nkd.data.augment import to_unit_float
from nkd.evaluation import batching, predict
from nkd.evaluation.evaluator import EvalData, Model
from nkd.evaluation.predict import ApplyFn

SWEEP_STEP_FACTOR = 2.5  # step size = 2.5 * eps / steps (Madry et al.'s rule of thumb)


# ---------------------------------------------------------------------------------------------
# Pieces.


def random_start(key: jax.Array, images: jax.Array, eps: jax.Array) -> jax.Array:
  """A uniform sample of the eps-ball around `images`, clipped to [0, 1]."""
  delta = jax.random.uniform(key, images.shape, jnp.float32, -1.0, 1.0) * eps
  return jnp.clip(images + delta, 0.0, 1.0)


def sign_gradient_step(x_adv: jax.Array, grad: jax.Array, step_size: jax.Array) -> jax.Array:
  return x_adv + step_size * jnp.sign(grad)


def project(x_adv: jax.Array, images: jax.Array, eps: jax.Array) -> jax.Array:
  """Onto the L-inf eps-ball around `images`, then onto the valid pixel range [0, 1]."""
  return jnp.clip(jnp.clip(x_adv, images - eps, images + eps), 0.0, 1.0)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def margin_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Carlini-Wagner margin: best wrong logit minus the true logit (> 0 means misclassified)."""
  true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  wrong = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.max(wrong, axis=-1) - true_logit


_LOSS_FNS = {"ce": cross_entropy_loss, "margin": margin_loss}


def _attack(
    apply_fn: ApplyFn, variables, loss: str, key, images, labels, eps, step_size, steps, start_scale
):
  """PGD on [0, 1] float images; start_scale 0 starts at the clean image (FGSM, eps=0)."""
  loss_fn = _LOSS_FNS[loss]
  # Eval mode: examples do not interact, so the gradient of the summed loss is per example.
  grad_fn = jax.grad(lambda x: jnp.sum(loss_fn(apply_fn(variables, x), labels)))
  start = random_start(key, images, eps)
  x0 = project(images + start_scale * (start - images), images, eps)

  def body(_, x_adv):
    return project(sign_gradient_step(x_adv, grad_fn(x_adv), step_size), images, eps)

  return jax.lax.fori_loop(0, steps, body, x0)


@functools.partial(jax.jit, static_argnames=("apply_fn", "loss"))
def _pgd_core(
    apply_fn, variables, key, images, labels, eps, step_size, steps, start_scale, *, loss
):
  """(adversarial images, still-correct mask): the one compiled core behind every attack."""
  x_adv = _attack(
      apply_fn,
      variables,
      loss,
      key,
      to_unit_float(images),
      labels,
      eps,
      step_size,
      steps,
      start_scale,
  )
  return x_adv, jnp.argmax(apply_fn(variables, x_adv), axis=-1) == labels


def pgd_core_cache_size() -> int:
  """Compiled variants of the PGD core (tests: one compilation per shape)."""
  return _pgd_core._cache_size()  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# Checks and public entry points.


def check_attack_options(
    *, eps=None, steps=None, step_size=None, restarts=None, loss=None, batch_size=None
) -> None:
  """ValueError naming the option for values no attack can use."""
  for value in np.atleast_1d(eps if eps is not None else []):
    if not np.isfinite(value) or value < 0:
      raise ValueError(f"eps must be a finite number >= 0, got {value}")
  for value in np.atleast_1d(steps if steps is not None else []):
    if int(value) != value or value < 1:
      raise ValueError(f"steps must be an integer >= 1, got {value}")
  if step_size is not None and (not np.isfinite(step_size) or step_size < 0):
    raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
  if restarts is not None and (int(restarts) != restarts or restarts < 1):
    raise ValueError(f"restarts must be an integer >= 1, got {restarts}")
  if loss is not None and loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if batch_size is not None:
    batching.check_batch_size(batch_size)


def _scalars(eps, step_size, steps, start_scale):
  return (np.float32(eps), np.float32(step_size), np.int32(steps), np.float32(start_scale))


def pgd_attack(
    apply_fn: ApplyFn,
    variables,
    key: jax.Array,
    images,
    labels,
    *,
    eps: float,
    step_size: float,
    steps: int,
    loss: str = "ce",
) -> jax.Array:
  """Adversarial images (float32 in [0, 1], same shape) from one random start.

  images: uint8 or [0, 1] float NHWC; uint8 input shares the compilation of evaluate_pgd."""
  check_attack_options(eps=eps, steps=steps, step_size=step_size, loss=loss)
  return _pgd_core(
      apply_fn,
      variables,
      key,
      jnp.asarray(images),
      jnp.asarray(labels, jnp.int32),
      *_scalars(eps, step_size, steps, 1.0),
      loss=loss,
  )[0]


def correct_under_attack(
    apply_fn: ApplyFn,
    variables,
    key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    eps: float,
    step_size: float,
    steps: int,
    loss: str = "ce",
    batch_size: int = 1000,
    random_start_scale: float = 1.0,
) -> np.ndarray:
  """Bool (N,): still correct after one attack run; batch b uses key fold_in(key, b)."""
  n = len(images)
  size = batching.effective_batch_size(n, batch_size)
  scalars = _scalars(eps, step_size, steps, random_start_scale)
  out = np.zeros(n, bool)
  for index, start, stop in batching.padded_batches(n, size):
    batch, batch_labels = batching.split_over_model_devices(
        variables,
        batching.pad_batch(np.asarray(images[start:stop]), size),
        batching.pad_batch(np.asarray(labels[start:stop]).astype(np.int32), size),
    )
    with batching.on_model_devices(variables):
      _, correct = _pgd_core(
          apply_fn,
          variables,
          jax.random.fold_in(key, index),
          batch,
          batch_labels,
          *scalars,
          loss=loss,
      )
    out[start:stop] = np.asarray(correct)[: stop - start]
  return out


def _percent(mask: np.ndarray) -> float:
  return float(100.0 * np.mean(mask))


def _clean_correct(apply_fn, variables, images, labels, batch_size) -> np.ndarray:
  logits = predict.compute_logits(apply_fn, variables, images, batch_size)
  return np.argmax(logits, axis=-1) == np.asarray(labels)


def _check_data(images, labels) -> None:
  if len(images) == 0 or len(images) != len(labels):
    raise ValueError(
        f"need as many labels as images (> 0), got {len(images)} images and "
        f"{len(labels)} labels"
    )


def evaluate_pgd(
    apply_fn: ApplyFn,
    variables,
    key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    eps_list: Sequence[float],
    steps_list: Sequence[int],
    step_size: float,
    restarts: int = 5,
    loss: str = "ce",
    batch_size: int = 1000,
    fgsm: bool = True,
    clean_correct: np.ndarray | None = None,
) -> dict:
  """PGD over the whole given set for every (eps, steps); JSON-able.

  Restart r of every setting uses key fold_in(key, r) (batch b: fold_in(fold_in(key, r), b)),
  so settings share their random starts. Returns
  {"attack", "num_examples", "clean_accuracy", "results": [per (eps, steps) dict], "fgsm":
  [per eps dict] (if fgsm), "sanity": {...}}.
  """
  eps_list, steps_list = tuple(float(e) for e in eps_list), tuple(int(s) for s in steps_list)
  if not eps_list or not steps_list:
    raise ValueError("eps_list and steps_list must not be empty")
  check_attack_options(
      eps=eps_list,
      steps=steps_list,
      step_size=step_size,
      restarts=restarts,
      loss=loss,
      batch_size=batch_size,
  )
  _check_data(images, labels)
  if clean_correct is None:
    clean_correct = _clean_correct(apply_fn, variables, images, labels, batch_size)
  clean_accuracy = _percent(clean_correct)
  results = []
  for eps in eps_list:
    for steps in steps_list:
      per_restart = [
          correct_under_attack(
              apply_fn,
              variables,
              jax.random.fold_in(key, r),
              images,
              labels,
              eps=eps,
              step_size=step_size,
              steps=steps,
              loss=loss,
              batch_size=batch_size,
          )
          for r in range(restarts)
      ]
      robust = clean_correct & np.all(per_restart, axis=0)
      restart_accuracies = [_percent(c) for c in per_restart]
      results.append(
          {
              "eps": eps,
              "step_size": float(step_size),
              "steps": steps,
              "restarts": int(restarts),
              "loss": loss,
              "random_start": True,
              "clean_accuracy": clean_accuracy,
              "robust_accuracy": _percent(robust),
              "worst_restart_accuracy": min(restart_accuracies),
              "restart_accuracies": restart_accuracies,
          }
      )
      logging.info(
          "PGD-%d eps=%.4f step=%.4f restarts=%d loss=%s: robust %.2f%% (worst " "restart %.2f%%)",
          steps,
          eps,
          step_size,
          restarts,
          loss,
          results[-1]["robust_accuracy"],
          results[-1]["worst_restart_accuracy"],
      )
  out = {
      "attack": "linf_pgd",
      "num_examples": int(len(images)),
      "clean_accuracy": clean_accuracy,
      "results": results,
  }
  if fgsm:
    out["fgsm"] = [
        evaluate_fgsm(
            apply_fn,
            variables,
            images,
            labels,
            eps=eps,
            loss=loss,
            batch_size=batch_size,
            clean_correct=clean_correct,
        )
        for eps in eps_list
    ]
    # The strongest PGD at each eps (most steps, all restarts) should beat one FGSM step; a
    # short PGD whose steps add up to less than eps need not.
    out["sanity"] = {
        "pgd_le_fgsm": all(
            min(r["robust_accuracy"] for r in results if r["eps"] == f["eps"]) <= f["accuracy"]
            for f in out["fgsm"]
        )
    }
    if not out["sanity"]["pgd_le_fgsm"]:
      logging.warning(
          "PGD is weaker than FGSM at some eps: a sign of gradient masking or of "
          "too small a step size."
      )
  return out


def evaluate_fgsm(
    apply_fn: ApplyFn,
    variables,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    eps: float,
    loss: str = "ce",
    batch_size: int = 1000,
    clean_correct: np.ndarray | None = None,
) -> dict:
  """FGSM accuracy (percent; correct clean and after the attack), as a dict."""
  check_attack_options(eps=eps, loss=loss, batch_size=batch_size)
  _check_data(images, labels)
  if clean_correct is None:
    clean_correct = _clean_correct(apply_fn, variables, images, labels, batch_size)
  correct = correct_under_attack(
      apply_fn,
      variables,
      jax.random.key(0),
      images,
      labels,
      eps=eps,
      step_size=eps,
      steps=1,
      loss=loss,
      batch_size=batch_size,
      random_start_scale=0.0,
  )
  return {
      "attack": "fgsm",
      "eps": float(eps),
      "loss": loss,
      "clean_accuracy": _percent(clean_correct),
      "accuracy": _percent(clean_correct & correct),
  }


def eps_sweep(
    apply_fn: ApplyFn,
    variables,
    key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    eps_values: Sequence[float] = DEFAULT_SWEEP_EPS,
    steps: int = 10,
    restarts: int = 1,
    loss: str = "ce",
    batch_size: int = 1000,
    step_factor: float = SWEEP_STEP_FACTOR,
    clean_correct: np.ndarray | None = None,
) -> dict:
  """Robust accuracy (percent, per-example worst case) over growing eps, step = f * eps / steps.

  A sound attack drives accuracy to 0 by eps = 1 (any image is reachable) and never raises it
  as eps grows; `reaches_zero` and `monotone` record whether that held here.
  """
  eps_values = tuple(float(e) for e in eps_values)
  if not eps_values:
    raise ValueError("eps_values must not be empty")
  check_attack_options(
      eps=eps_values, steps=steps, restarts=restarts, loss=loss, batch_size=batch_size
  )
  if not np.isfinite(step_factor) or step_factor <= 0:
    raise ValueError(f"step_factor must be > 0, got {step_factor}")
  _check_data(images, labels)
  if clean_correct is None:
    clean_correct = _clean_correct(apply_fn, variables, images, labels, batch_size)
  accuracies, step_sizes = [], []
  for eps in eps_values:
    step_size = step_factor * eps / steps
    robust = clean_correct.copy()
    for r in range(restarts):
      robust &= correct_under_attack(
          apply_fn,
          variables,
          jax.random.fold_in(key, r),
          images,
          labels,
          eps=eps,
          step_size=step_size,
          steps=steps,
          loss=loss,
          batch_size=batch_size,
      )
    accuracies.append(_percent(robust))
    step_sizes.append(step_size)
  largest = int(np.argmax(eps_values))
  out = {
      "attack": "linf_pgd",
      "eps": list(eps_values),
      "accuracy": accuracies,
      "steps": int(steps),
      "restarts": int(restarts),
      "loss": loss,
      "step_size": step_sizes,
      "step_size_rule": f"{step_factor:g} * eps / steps",
      "num_examples": int(len(images)),
      # None when the sweep does not reach eps = 1, where 0 is guaranteed.
      "reaches_zero": (bool(accuracies[largest] == 0.0) if eps_values[largest] >= 1.0 else None),
      "monotone": bool(
          all(
              accuracies[j] <= accuracies[i]
              for i in range(len(eps_values))
              for j in range(len(eps_values))
              if eps_values[j] > eps_values[i]
          )
      ),
  }
  if out["reaches_zero"] is False or not out["monotone"]:
    logging.warning(
        "eps sweep sanity check failed (reaches_zero=%s, monotone=%s): the attack "
        "may be masked by the model's gradients",
        out["reaches_zero"],
        out["monotone"],
    )
  return out


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "pgd" section: `evaluate_pgd` with --pgd_* (the preset's eps, steps and step
  size unless given) on the first --pgd_num_examples test images, key fold_in(key, --pgd_seed),
  and the eps sweep on the first --pgd_sweep_num_examples of them."""
  settings = options.pgd_settings()
  n = options.pgd_num_examples or len(data.images)
  images, labels = data.images[:n], data.labels[:n]
  attack_key, sweep_key = keys_lib.split(keys_lib.fold_in(data.key, options.pgd_seed))
  # Where the suite has the test set's clean logits already (its accuracy section), the clean
  # predictions come from them (each example's logits do not depend on its batch), not from
  # another program compiled for the attack's batch size.
  clean_correct = None
  if data.logits is not None:
    clean_correct = np.argmax(data.logits[:n], axis=-1) == np.asarray(labels)
  out = evaluate_pgd(
      model.apply_fn,
      model.variables,
      attack_key,
      images,
      labels,
      eps_list=settings["eps"],
      steps_list=settings["steps"],
      step_size=settings["step_size"],
      restarts=options.pgd_restarts,
      loss=options.pgd_loss,
      batch_size=options.pgd_batch_size,
      fgsm=options.pgd_fgsm,
      clean_correct=clean_correct,
  )
  out.update(
      {
          "preset": options.pgd_preset,
          "seed": options.pgd_seed,
          "mode": "eval",
          "input_range": "[0, 1]",
      }
  )
  if options.pgd_eps_sweep:
    n = options.pgd_sweep_num_examples or len(images)
    out["eps_sweep"] = eps_sweep(
        model.apply_fn,
        model.variables,
        sweep_key,
        images[:n],
        labels[:n],
        eps_values=options.pgd_eps_sweep,
        steps=options.pgd_sweep_steps,
        loss=options.pgd_loss,
        batch_size=options.pgd_batch_size,
        clean_correct=None if clean_correct is None else clean_correct[:n],
    )
  return out
