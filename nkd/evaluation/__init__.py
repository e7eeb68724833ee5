"""Evaluation: clean accuracy, calibration, PGD robustness, CIFAR-10-C and CINIC-10 (ImageNet).

Every evaluator takes `apply_fn(images) -> logits`, a pure jittable function of NHWC float
images in [0, 1] (the model in eval mode). It is a static argument of the jitted cores: pass the
same function object to reuse a compilation (each core compiles once per batch shape and is
reused across epsilons, step counts, restarts, corruptions and severities); weights it closes
over become compile-time constants. Results are JSON-able dicts; every accuracy, agreement and
ECE in them is in percent.

Modules: pgd (L-inf PGD, FGSM, eps sweep), cifar10c (+ corruptions, image_ops: offline
regeneration), cinic, calibration, options (EvalOptions: every flag), suite (run_suite),
batching (padded batches, the shared eval cores).
"""

from nkd.evaluation.options import EvalOptions
from nkd.evaluation.suite import run_suite

__all__ = ["EvalOptions", "run_suite"]
