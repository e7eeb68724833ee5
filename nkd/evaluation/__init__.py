"""Evaluation: clean accuracy, calibration, PGD, CIFAR-10-C, CINIC-10 (ImageNet), AutoAttack and
randomized smoothing, each an evaluator `run(model, data, options) -> section` (evaluator.py)
in suite.py's registry. Options, constants and checks: nkd.config.evaluation.

Every evaluator takes the model as `(apply_fn, variables)`: `apply_fn` is a static argument of
the jitted cores (memoised per architecture, `predict.eval_apply_fn`), `variables` traced, so a
core compiles once per shape and is reused across models, epsilons and corruptions.
docs/EVALUATION.md says more.
"""
