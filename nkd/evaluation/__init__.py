"""Evaluation: clean accuracy, calibration, PGD robustness, CIFAR-10-C and CINIC-10 (ImageNet).

Every evaluator takes the model as `(apply_fn, variables)`: `apply_fn(variables, images) ->
logits` is a pure, hashable function of NHWC float images in [0, 1] (the model in eval mode;
`predict.eval_apply_fn(model)` is memoised per architecture) and a static argument of the jitted
cores; `variables` are traced. So each core compiles once per (architecture, batch shape) and is
reused across models, epsilons, step counts, restarts, corruptions and severities; through the
persistent compilation cache, across processes too. Results are JSON-able dicts; every accuracy,
agreement and ECE in them is in percent.

Modules: predict (the one prediction path), batching (padded batches), pgd (L-inf PGD, FGSM,
eps sweep), autoattack/ (APGD, Square, FAB-T, AutoAttack, EOT, the gradient-masking check),
smoothing (randomized smoothing: PREDICT and CERTIFY), cifar10c/ (readers; generate +
image_ops: offline regeneration), cinic, calibration, suite (run_suite). Options: nkd.config.evaluation.EvalOptions.
"""
