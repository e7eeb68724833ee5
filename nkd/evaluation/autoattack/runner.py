"""AutoAttack (Croce & Hein 2020): its stages in sequence, each only on the points still robust,
every candidate judged again (inside the eps-ball and [0, 1], and misclassified).

Stage s draws from fold_in(key, STAGE_KEYS[s]) and example i from its own key within it, so for
a deterministic model a result does not depend on the batch size; versions, keys and batching
in docs/EVALUATION.md.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from nkd import fileio
from nkd.config.evaluation import check_autoattack
from nkd.data.augment import to_unit_float
from nkd.evaluation import batching
from nkd.evaluation.autoattack import apgd, common, fab, masking, square
from nkd.evaluation.evaluator import EvalData, Model

VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "fast": ("apgd-ce", "apgd-t"),
}
# Stage s draws from fold_in(key, STAGE_KEYS[s]) whichever version runs it.
STAGE_KEYS = {"apgd-ce": 1, "apgd-t": 2, "fab-t": 3, "square": 4}
VERSION_NAMES = {
    "standard": "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)",
    "fast": "AutoAttack-fast (APGD-CE + APGD-T only; not the standard AutoAttack)",
}


def settings(
    *,
    n_iter: int = 100,
    fab_iter: int | None = None,
    square_queries: int = 5000,
    n_target_classes: int = 9,
    apgd_restarts: int = 1,
    square_rescale: bool = False,
    num_classes: int | None = None,
) -> dict:
  """Per-attack settings (the reference's standard ones by default), JSON-able."""
  targets = n_target_classes if num_classes is None else min(n_target_classes, num_classes - 1)
  return {
      "apgd-ce": {
          "loss": "ce",
          "n_iter": n_iter,
          "restarts": apgd_restarts,
          "momentum": apgd.MOMENTUM,
          "rho": apgd.RHO,
          "initial_step": "2 eps",
      },
      "apgd-t": {
          "loss": "dlr-targeted",
          "n_iter": n_iter,
          "restarts": 1,
          "n_target_classes": targets,
          "momentum": apgd.MOMENTUM,
          "rho": apgd.RHO,
          "initial_step": "2 eps",
      },
      "fab-t": {
          "n_iter": n_iter if fab_iter is None else fab_iter,
          "restarts": 1,
          "n_target_classes": targets,
          "alpha_max": fab.ALPHA_MAX,
          "eta": fab.ETA,
          "beta": fab.BETA,
      },
      "square": {
          "n_queries": square_queries,
          "restarts": 1,
          "p_init": square.P_INIT,
          "rescale_schedule": bool(square_rescale),
          "loss": "margin",
      },
  }


def _runs(stage: str, cfg: dict) -> list[dict]:
  """The runs of a stage: one per restart (and per target class for the targeted attacks)."""
  if stage in ("apgd-t", "fab-t"):
    return [
        {"target_rank": t, "restart": r}
        for t in range(2, cfg["n_target_classes"] + 2)
        for r in range(cfg["restarts"])
    ]
  return [{"restart": r} for r in range(cfg["restarts"])]


def _attack_batch(stage, run, cfg, spec, variables, keys, key, xb, yb, tb, eps):
  """(candidate adversarials, Square queries or None) for one padded batch."""
  if stage in ("apgd-ce", "apgd-t"):
    adv, _, _ = apgd.apgd_batch(
        spec,
        variables,
        keys,
        key,
        xb,
        yb,
        eps=eps,
        n_iter=cfg["n_iter"],
        loss=cfg["loss"],
        targets=tb,
        rho=cfg["rho"],
    )
    return adv, None
  if stage == "fab-t":
    adv, _ = fab.fab_batch(
        spec,
        variables,
        keys,
        key,
        xb,
        yb,
        tb,
        eps=eps,
        n_iter=cfg["n_iter"],
        alpha_max=cfg["alpha_max"],
        eta=cfg["eta"],
        beta=cfg["beta"],
        random_start=run["restart"] > 0,
    )
    return adv, None
  adv, _, queries = square.square_batch(
      spec,
      variables,
      keys,
      key,
      xb,
      yb,
      eps=eps,
      n_queries=cfg["n_queries"],
      p_init=cfg["p_init"],
      rescale=cfg["rescale_schedule"],
  )
  return adv, queries


def _percent(count, total) -> float:
  return float(100.0 * count / total)


def _summary(values: np.ndarray) -> dict | None:
  if len(values) == 0:
    return None
  return {
      "count": int(len(values)),
      "mean": float(np.mean(values)),
      "median": float(np.median(values)),
      "max": int(np.max(values)),
  }


def run_autoattack(
    apply_fn,
    variables,
    key: jax.Array,
    images,
    labels,
    *,
    eps: float,
    version: str = "standard",
    batch_size: int = 500,
    random_apply_fn=None,
    eot: int = 1,
    n_iter: int = 100,
    fab_iter: int | None = None,
    square_queries: int = 5000,
    n_target_classes: int = 9,
    apgd_restarts: int = 1,
    square_rescale: bool = False,
    num_examples: int | None = None,
    return_adversarials: bool = False,
):
  """AutoAttack, L-inf, on `images` (uint8 or [0, 1] float NHWC) and `labels`.

  apply_fn(variables, images) -> logits for a deterministic model; for a model random at test
  time give random_apply_fn(variables, images, key) and `eot` = K draws (EOT; K is 1 for a
  deterministic model). num_examples: attack the first N (0/None: all).

  Returns a JSON-able dict (accuracies in percent): {"attack": "autoattack", "norm": "Linf",
  "name", "version", "eps", "attacks": [stage names], "settings": {stage: {...}}, "eot",
  "random_model", "num_examples", "clean_accuracy", "stages": [{"name",
  "robust_accuracy" (after the stage), "attacked", "broken", "batch_shapes" (the padded batch
  sizes it ran), "seconds"}],
  "robust_accuracy_after": {stage: accuracy}, "robust_accuracy" (final), "square_queries"
  ({"attacked": summary of queries per attacked point, "broken": of the points Square broke},
  or None), "max_perturbation" (largest L-inf distance of an accepted adversarial), "seconds",
  "masking_check" (`masking.masking_check` on Square against the white-box stages; None
  without Square),
  "per_example": {"clean_correct", "robust", "broken_by" (stage name, or None where not
  broken or misclassified clean), "square_queries" (None where Square did not run)}}.
  With return_adversarials: (dict, adversarials float32 NHWC; the clean image where none).
  """
  check_autoattack(
      eps=eps, version=version, eot=eot, num_examples=num_examples, available=len(images)
  )
  if len(images) != len(labels) or len(images) == 0:
    raise ValueError(
        f"need as many labels as images (> 0), got {len(images)} images and "
        f"{len(labels)} labels"
    )
  for value, option in (
      (n_iter, "n_iter"),
      (square_queries, "square_queries"),
      (n_target_classes, "n_target_classes"),
      (apgd_restarts, "apgd_restarts"),
  ):
    common.check_positive_int(value, option)
  if fab_iter is not None:
    common.check_positive_int(fab_iter, "fab_iter")
  batching.check_batch_size(batch_size)
  if num_examples:
    images, labels = images[:num_examples], labels[:num_examples]
  t_start = time.time()
  spec = common.model_spec(apply_fn, random_apply_fn, eot)
  x = to_unit_float(np.asarray(images))
  y = np.asarray(labels, np.int32)
  n = len(x)
  size = batching.effective_batch_size(n, batch_size)

  # Clean predictions (judged as every adversarial is).
  clean_scores = common.batched_scores(spec, variables, jax.random.fold_in(key, 0), x, size)
  common.check_finite_scores(clean_scores)
  num_classes = clean_scores.shape[-1]
  clean_correct = np.argmax(clean_scores, -1) == y
  cfgs = settings(
      n_iter=n_iter,
      fab_iter=fab_iter,
      square_queries=square_queries,
      n_target_classes=n_target_classes,
      apgd_restarts=apgd_restarts,
      square_rescale=square_rescale,
      num_classes=num_classes,
  )
  attacks = VERSION_ATTACKS[version]

  robust = clean_correct.copy()
  broken_by: list[Any] = [None] * n
  adversarials = x.copy()
  queries = np.zeros(n, np.int64)
  square_ran = np.zeros(n, bool)
  stages = []
  for stage in attacks:
    t0 = time.time()
    cfg = cfgs[stage]
    stage_key = jax.random.fold_in(key, STAGE_KEYS[stage])
    attacked = int(robust.sum())
    shapes = set()
    if stage == "square":
      square_ran |= robust
    for r_index, run in enumerate(_runs(stage, cfg) if num_classes > 1 else []):
      idx = np.flatnonzero(robust)
      if not len(idx):
        break
      run_key = jax.random.fold_in(stage_key, r_index)
      targets = (
          common.targets_by_rank(clean_scores, run["target_rank"]) if "target_rank" in run else y
      )
      for b, start, stop in batching.padded_batches(len(idx), size):
        sel = idx[start:stop]
        shape = batching.bucket_size(len(sel), size)
        shapes.add(shape)
        xb = batching.pad_batch(x[sel], shape)
        yb = batching.pad_batch(y[sel], shape)
        tb = batching.pad_batch(targets[sel], shape)
        keys, attack_key, judge_key = common.run_keys(run_key, batching.pad_batch(sel, shape), b)
        xb, yb, tb, keys = batching.split_over_model_devices(variables, xb, yb, tb, keys)
        with batching.on_model_devices(variables):
          adv, used = _attack_batch(
              stage, run, cfg, spec, variables, keys, attack_key, xb, yb, tb, eps
          )
          judged = np.asarray(common.judge_scores(spec, variables, judge_key, adv))[: len(sel)]
        adv = np.asarray(adv)[: len(sel)]
        broken = (np.argmax(judged, -1) != y[sel]) & common.inside_ball(adv, x[sel], eps)
        if used is not None:
          queries[sel] += np.asarray(used)[: len(sel)]
        robust[sel[broken]] = False
        adversarials[sel[broken]] = adv[broken]
        for i in sel[broken]:
          broken_by[i] = stage
    accuracy = _percent(robust.sum(), n)
    stages.append(
        {
            "name": stage,
            "robust_accuracy": accuracy,
            "attacked": attacked,
            "broken": attacked - int(robust.sum()),
            "batch_shapes": sorted(shapes),
            "seconds": time.time() - t0,
        }
    )
    logging.info(
        "AutoAttack %s eps=%.4f: robust accuracy %.2f%% (%d of %d attacked points "
        "broken, %.1f s)",
        stage,
        eps,
        accuracy,
        stages[-1]["broken"],
        attacked,
        stages[-1]["seconds"],
    )

  broken_mask = np.array([b is not None for b in broken_by])
  perturbation = common.linf_norm(adversarials - x) if n else np.zeros(0)
  by_square = np.array([b == "square" for b in broken_by])
  result = {
      "attack": "autoattack",
      "norm": "Linf",
      "name": VERSION_NAMES[version],
      "version": version,
      "eps": float(eps),
      "attacks": list(attacks),
      "settings": {a: cfgs[a] for a in attacks},
      "eot": spec[2],
      "random_model": random_apply_fn is not None,
      "num_examples": int(n),
      "num_classes": int(num_classes),
      "clean_accuracy": _percent(clean_correct.sum(), n),
      "stages": stages,
      "robust_accuracy_after": {s["name"]: s["robust_accuracy"] for s in stages},
      "robust_accuracy": _percent(robust.sum(), n),
      "square_queries": (
          {"attacked": _summary(queries[square_ran]), "broken": _summary(queries[by_square])}
          if "square" in attacks
          else None
      ),
      "max_perturbation": float(np.max(np.asarray(perturbation)[broken_mask], initial=0.0)),
      "seconds": time.time() - t_start,
      "per_example": {
          "clean_correct": clean_correct.tolist(),
          "robust": robust.tolist(),
          "broken_by": broken_by,
          "square_queries": (
              [int(q) if ran else None for q, ran in zip(queries, square_ran)]
              if "square" in attacks
              else None
          ),
      },
  }
  # Square after the white-box stages: breaking more than 2 points more is a masking sign.
  result["masking_check"] = (
      masking.masking_check(autoattack=result) if "square" in attacks else None
  )
  logging.info(
      "%s eps=%.4f: clean %.2f%%, robust %.2f%%",
      result["name"],
      eps,
      result["clean_accuracy"],
      result["robust_accuracy"],
  )
  if result["masking_check"] and result["masking_check"]["suspicious"]:
    for flag in result["masking_check"]["flags"]:
      logging.warning("AutoAttack gradient-masking check: %s", flag["message"])
  if return_adversarials:
    return result, adversarials
  return result


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "autoattack" section: AutoAttack at every --autoattack_eps on the first
  --autoattack_num_examples test images, the random model with --attack_eot draws where the
  options make it random at test time; each entry's masking check uses the PGD section when
  there is one. The per-example outcome (which attack broke each image) goes to
  OUTPUT_DIR/autoattack.json."""
  start = time.time()
  images, labels = data.images, data.labels
  check_autoattack(num_examples=options.autoattack_num_examples, available=len(images))
  n = options.autoattack_num_examples or len(images)
  random_model = options.random_at_test_time and model.random_apply_fn is not None
  eot = options.attack_eot if random_model else 1
  entries, per_example = [], {}
  for index, eps in enumerate(options.autoattack_eps):
    result = run_autoattack(
        None if random_model else model.apply_fn,
        model.variables,
        jax.random.fold_in(data.key_of("autoattack"), index),
        images[:n],
        labels[:n],
        eps=eps,
        version=options.autoattack_version,
        batch_size=options.autoattack_batch_size,
        random_apply_fn=model.random_apply_fn if random_model else None,
        eot=eot,
        n_iter=options.autoattack_iterations,
        square_queries=options.autoattack_square_queries,
    )
    per_example[f"{eps:g}"] = result.pop("per_example")
    result["masking_check"] = masking.masking_check_with_pgd(result, data.sections.get("pgd"))
    entries.append(result)
    logging.info(
        "AutoAttack (%s) eps %.4f: robust %.2f%% (clean %.2f%%)%s",
        options.autoattack_version,
        eps,
        result["robust_accuracy"],
        result["clean_accuracy"],
        "; gradient masking suspected" if result["masking_check"]["suspicious"] else "",
    )
  out = {
      "version": options.autoattack_version,
      "name": entries[0]["name"],
      "eps": list(options.autoattack_eps),
      "num_examples": int(n),
      "eot": eot,
      "random_model": bool(random_model),
      "results": entries,
      "seconds": time.time() - start,
  }
  if data.output_dir:
    fileio.write_json(os.path.join(data.output_dir, "autoattack.json"), per_example)
    out["per_example_file"] = "autoattack.json"
  return out
