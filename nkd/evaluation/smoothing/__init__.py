"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): PREDICT and CERTIFY in JAX.

g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I), is constant within L2 radius
sigma * Phi^-1(pA_lower) of x when pA_lower > 1/2 (their Theorem 1). Modules: statistics,
sampling (the device counting core), per_image, dataset (and the suite's section), side_file.
docs/EVALUATION.md gives the procedure, the keys and the throughput design.
"""

from nkd.config.evaluation import (
    SMOOTHING_ALPHA as ALPHA,
    SMOOTHING_BATCH_SIZE as BATCH_SIZE,
    SMOOTHING_N as N,
    SMOOTHING_N0 as N0,
    SMOOTHING_NUM_EXAMPLES as NUM_EXAMPLES,
)
from nkd.evaluation.smoothing.dataset import (
    RADII,
    certified_accuracy_curve,
    certify_dataset,
    predict_dataset,
    run,
    select_indices,
)
from nkd.evaluation.smoothing.per_image import (
    ABSTAIN,
    PREDICT_N,
    certify,
    certify_from_counts,
    predict,
    predict_from_counts,
)
from nkd.evaluation.smoothing.sampling import (
    STREAM_ESTIMATE,
    STREAM_PREDICT,
    STREAM_SELECT,
    count_draws,
    counts_core_cache_size,
    draw_key,
    infer_num_classes,
    sample_counts,
    smoothing_apply_fn,
)
from nkd.evaluation.smoothing.side_file import write_per_example
from nkd.evaluation.smoothing.statistics import (
    binomial_test,
    certified_radius,
    clopper_pearson_interval,
    clopper_pearson_lower,
)

__all__ = [
    "ABSTAIN",
    "ALPHA",
    "BATCH_SIZE",
    "N",
    "N0",
    "NUM_EXAMPLES",
    "PREDICT_N",
    "RADII",
    "STREAM_ESTIMATE",
    "STREAM_PREDICT",
    "STREAM_SELECT",
    "binomial_test",
    "certified_accuracy_curve",
    "certified_radius",
    "certify",
    "certify_dataset",
    "certify_from_counts",
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "count_draws",
    "counts_core_cache_size",
    "draw_key",
    "infer_num_classes",
    "predict",
    "predict_dataset",
    "predict_from_counts",
    "run",
    "sample_counts",
    "select_indices",
    "smoothing_apply_fn",
    "write_per_example",
]
