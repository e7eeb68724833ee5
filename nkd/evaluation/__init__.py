"""Evaluation: clean accuracy, calibration, PGD robustness, CIFAR-10-C and CINIC-10 (ImageNet).

Every evaluator takes `apply_fn(images) -> logits`, a pure jittable function of NHWC float
images in [0, 1] (the model in eval mode); each has a jitted core compiled once per batch shape
and reused across epsilons, corruptions and severities. Results are JSON-able dicts; every
accuracy, agreement and ECE in them is in percent.
"""
