"""The statistics of CERTIFY and PREDICT (scipy; Cohen et al.'s statsmodels calls written out):
Clopper-Pearson bounds, the two-sided binomial test and the certified radius of Theorem 1."""

from __future__ import annotations

from nkd.config.evaluation import is_int
from nkd.lazy import lazy_module

stats = lazy_module("scipy.stats")


def _check_counts(k: int, n: int) -> None:
  if not (is_int(k) and is_int(n) and 0 <= k <= n and n >= 1):
    raise ValueError(f"need integer counts 0 <= k <= n, n >= 1; got k={k!r}, n={n!r}")


def _check_alpha(alpha: float) -> None:
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
  """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from k of n:
  the alpha quantile of Beta(k, n - k + 1), 0 when k = 0. Equal to the reference's
  `proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`."""
  _check_counts(k, n)
  _check_alpha(alpha)
  if k == 0:
    return 0.0
  return float(stats.beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_interval(k: int, n: int, alpha: float) -> tuple[float, float]:
  """Two-sided (1 - alpha) Clopper-Pearson interval, statsmodels'
  `proportion_confint(k, n, alpha, method="beta")`: quantiles alpha/2 of Beta(k, n - k + 1)
  and 1 - alpha/2 of Beta(k + 1, n - k), with 0 at k = 0 and 1 at k = n."""
  _check_counts(k, n)
  _check_alpha(alpha)
  lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
  upper = 1.0 if k == n else float(stats.beta.isf(alpha / 2, k + 1, n - k))
  return lower, upper


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
  """Two-sided exact binomial test p-value (the reference's `scipy.stats.binom_test`)."""
  _check_counts(k, n)
  return float(stats.binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def certified_radius(p_a_lower: float, sigma: float) -> float:
  """Theorem 1 with pB = 1 - pA: sigma * Phi^-1(pA_lower) (> 0 iff pA_lower > 1/2)."""
  return float(sigma * stats.norm.ppf(p_a_lower))
