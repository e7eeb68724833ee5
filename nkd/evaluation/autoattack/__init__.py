"""AutoAttack in JAX, L-inf: APGD-CE, APGD-T, FAB-T and Square (Croce & Hein 2020), EOT for
models random at test time, and a gradient-masking check.

Modules: common (losses, EOT, the judge, argument checks), apgd, square, fab, runner
(run_autoattack; `run`, the suite's section), masking. Every attack takes `apply_fn(variables,
images) -> logits` (images NHWC in [0, 1]; apply_fn a static argument of one jitted core per
attack, with eps, iterations and queries traced) or `random_apply_fn(variables, images, key)`
with `eot` draws. Accuracies are in percent.
"""

from nkd.evaluation.autoattack.apgd import apgd_attack, checkpoint_schedule, should_halve
from nkd.config.evaluation import AUTOATTACK_VERSIONS as VERSIONS
from nkd.evaluation.autoattack.common import dlr_loss, dlr_targeted_loss
from nkd.evaluation.autoattack.fab import fab_attack, project_linf_hyperplane
from nkd.evaluation.autoattack.masking import (
    masking_check,
    masking_check_with_pgd,
    pgd_budget_from_result,
)
from nkd.evaluation.autoattack.runner import VERSION_ATTACKS, run, run_autoattack, settings
from nkd.evaluation.autoattack.square import square_attack, square_p
from nkd.evaluation.autoattack import apgd as _apgd, common as _common, fab as _fab
from nkd.evaluation.autoattack import square as _square


def core_cache_sizes() -> dict[str, int]:
  """Compiled variants of each attack's jitted core (tests: one compilation per shape)."""
  cores = {
      "apgd": _apgd._apgd_core,
      "square": _square._square_core,
      "fab": _fab._fab_core,
      "autoattack_judge": _common._judge_core,
  }
  # pylint: disable-next=protected-access
  return {name: core._cache_size() for name, core in cores.items()}


__all__ = [
    "VERSIONS",
    "VERSION_ATTACKS",
    "apgd_attack",
    "checkpoint_schedule",
    "core_cache_sizes",
    "dlr_loss",
    "dlr_targeted_loss",
    "fab_attack",
    "masking_check",
    "masking_check_with_pgd",
    "pgd_budget_from_result",
    "project_linf_hyperplane",
    "run",
    "run_autoattack",
    "settings",
    "should_halve",
    "square_attack",
    "square_p",
]
