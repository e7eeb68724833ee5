"""Every evaluation option with its default and help text (`EvalOptions`), the constants the
evaluators share, and the checks of their values: each once, here. Plain Python: reading the
options imports no evaluator.

Each field becomes an absl flag of the same name; a check raises ConfigError naming the flag
(`--pgd_eps`). `validate()` runs the checks on the options; the evaluators' public functions run
the same checks on their arguments. An empty tuple or 0 for a PGD setting means "the preset's".
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from nkd.config.fields import opt
from nkd.errors import ConfigError

SUITE_ITEMS = ("accuracy", "calibration", "pgd", "cifar10c", "cinic", "smoothing", "autoattack")
# What a run evaluates unless --eval_suite says otherwise: the paper's evaluations. The
# evaluations that go beyond it are opt-in, being far more expensive.
DEFAULT_SUITE = ("accuracy", "calibration", "pgd", "cifar10c", "cinic")
AUTOATTACK_VERSIONS = ("standard", "fast")
CIFAR10C_SOURCES = ("auto", "official", "tfds", "regenerate")

# PGD (nkd/evaluation/pgd.py).
PGD_LOSSES = ("ce", "margin")
PGD_PRESETS = {
    # The paper's lab: eps 0.031, step 0.003, PGD-10/15/20 (the "# steps" axis of the paper's
    # PGD heat maps), 5 restarts (--pgd_restarts), worst reported. docs/FIDELITY.md.
    "paper": {"eps": (0.031,), "step_size": 0.003, "steps": (10, 15, 20)},
    # The common CIFAR-10 benchmark setting (Madry et al.; RobustBench's PGD-20 sanity check).
    "common": {"eps": (8 / 255,), "step_size": 2 / 255, "steps": (20,)},
}
# Eps sweep: growing eps up to 1.0, where any image can be reached and accuracy must be 0.
DEFAULT_SWEEP_EPS = (
    0.0,
    1 / 255,
    2 / 255,
    4 / 255,
    8 / 255,
    16 / 255,
    32 / 255,
    64 / 255,
    128 / 255,
    1.0,
)

# CIFAR-10-C (Hendrycks & Dietterich): 15 standard corruptions, 4 extras, 5 severities.
STANDARD_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)

# Randomized smoothing: the constants of Cohen et al.'s reference code (locuslab/smoothing,
# certify.py); 500 examples are every 20th of CIFAR-10's 10,000 test images (its --skip 20).
SMOOTHING_N0 = 100
SMOOTHING_N = 100_000
SMOOTHING_ALPHA = 0.001
SMOOTHING_NUM_EXAMPLES = 500
SMOOTHING_BATCH_SIZE = 1000
SMOOTHING_DTYPES = ("float32", "bfloat16")


def pgd_preset(name: str) -> dict:
  """{"eps": tuple, "step_size": float, "steps": tuple} for "paper" or "common"."""
  if name not in PGD_PRESETS:
    raise ConfigError(
        f"--pgd_preset: unknown preset {name!r}; expected one of " f"{sorted(PGD_PRESETS)}"
    )
  return dict(PGD_PRESETS[name])


def _field(default, help_text: str):
  # bookkeeping: how a run is evaluated never changes its trained parameters (the recipe).
  return opt(default, help_text, group="evaluation", bookkeeping=True)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """Evaluation options (see each field's metadata["help"])."""

  eval_suite: str = _field(
      ",".join(DEFAULT_SUITE), f"Comma-separated evaluations to run, from {', '.join(SUITE_ITEMS)}."
  )
  eval_batch_size: int = _field(1000, "Batch size for clean, CIFAR-10-C and CINIC evaluation.")
  eval_cache_dir: str = _field(
      "",
      "Folder for caches (regenerated CIFAR-10-C, decoded CINIC-10, downloads); "
      "default: <workdir>/eval_cache where the caller has a workdir.",
  )
  ece_bins: int = _field(15, "Equal-width confidence bins for the expected calibration error.")
  # PGD
  pgd_preset: str = _field(
      "paper",
      "PGD preset: 'paper' (eps 0.031, step 0.003, PGD-10/15/20, as the paper's "
      "figures) or 'common' (eps 8/255, step 2/255, PGD-20).",
  )
  pgd_eps: tuple[float, ...] = _field((), "L-inf radii in [0, 1] pixel units; empty: preset.")
  pgd_steps: tuple[int, ...] = _field((), "PGD step counts, e.g. 5,10,20; empty: preset.")
  pgd_step_size: float = _field(0.0, "PGD step size in pixel units; 0: preset.")
  pgd_restarts: int = _field(5, "Random restarts per attack; robust = survives every restart.")
  pgd_loss: str = _field("ce", "Attack loss: 'ce' (cross-entropy) or 'margin' (Carlini-Wagner).")
  pgd_batch_size: int = _field(1000, "Images per PGD batch.")
  pgd_num_examples: int = _field(0, "Attack the first N test images; 0: all.")
  pgd_seed: int = _field(0, "Seed of the attack's random starts (key fold_in(seed, restart)).")
  pgd_fgsm: bool = _field(True, "Also run FGSM at each eps (a sanity check: PGD <= FGSM).")
  pgd_eps_sweep: tuple[float, ...] = _field(
      DEFAULT_SWEEP_EPS,
      "Eps values of the sanity sweep (accuracy must fall to 0 at eps 1); empty: no sweep.",
  )
  pgd_sweep_steps: int = _field(10, "PGD steps in the eps sweep (step size 2.5 * eps / steps).")
  pgd_sweep_num_examples: int = _field(1000, "Images in the eps sweep; 0: as for PGD.")
  # CIFAR-10-C
  cifar10c_source: str = _field(
      "auto",
      "'official' (the folder --cifar10c_dir), 'tfds' (prepared cifar10_corrupted), "
      "'regenerate' (offline from the clean test set), or 'auto': the folder if given "
      "and present, else TFDS, else regenerate.",
  )
  cifar10c_dir: str = _field("", "Folder of the official CIFAR-10-C .npy files.")
  cifar10c_corruptions: str = _field("", "Comma-separated corruptions; empty: all 19.")
  cifar10c_severities: tuple[int, ...] = _field(SEVERITIES, "Severities to evaluate (1..5).")
  cifar10c_seed: int = _field(0, "Seed of the regenerated CIFAR-10-C.")
  cifar10c_frost_dir: str = _field(
      "",
      "Folder with make_cifar_c's frost1.png .. frost5.jpg; without it, regenerated frost "
      "is reported missing.",
  )
  tfds_data_dir: str = _field("", "TFDS data_dir holding a prepared cifar10_corrupted.")
  # CINIC-10
  cinic_dir: str = _field("", "CINIC-10 root (holding test/<class>/*.png).")
  cinic_download: bool = _field(
      False, "Download CINIC-10 (about 700 MB) into the cache folder when --cinic_dir is absent."
  )

  # Randomized smoothing (Cohen et al. 2019): certified L2 radii.
  smoothing_sigma: float = _field(
      0.0, "Std of the smoothing noise in [0, 1] pixel units; 0: the run's --input_noise_sigma."
  )
  smoothing_n0: int = _field(SMOOTHING_N0, "CERTIFY: noisy copies that pick the top class.")
  smoothing_n: int = _field(SMOOTHING_N, "CERTIFY: noisy copies that bound its probability.")
  smoothing_alpha: float = _field(SMOOTHING_ALPHA, "CERTIFY/PREDICT: failure probability.")
  smoothing_num_examples: int = _field(
      SMOOTHING_NUM_EXAMPLES,
      "Test images certified: every (N_test // this)-th, from index 0 "
      "(Cohen et al.: 500 of 10,000, every 20th); 0: all.",
  )
  smoothing_batch_size: int = _field(SMOOTHING_BATCH_SIZE, "Noisy copies per forward pass.")
  smoothing_dtype: str = _field(
      "float32", "Forward-pass dtype of the sampling (counts stay " "exact): float32 or bfloat16."
  )

  # AutoAttack (Croce & Hein 2020), L-inf.
  autoattack_eps: tuple[float, ...] = _field(
      (8 / 255, 0.031),
      "L-inf radii in [0, 1] pixel units (RobustBench's 8/255 and the " "paper's 0.031).",
  )
  autoattack_version: str = _field(
      "standard",
      "'standard': APGD-CE, APGD-T, FAB-T, Square; 'fast': APGD-CE + APGD-T only "
      "(named so in the results).",
  )
  autoattack_num_examples: int = _field(
      1000, "Attack the first N test images (RobustBench's quick evaluation: 1,000); 0: all."
  )
  autoattack_batch_size: int = _field(500, "Images per AutoAttack batch.")
  autoattack_iterations: int = _field(100, "Iterations of APGD and FAB.")
  autoattack_square_queries: int = _field(5000, "Queries of the Square attack.")
  attack_eot: int = _field(
      1,
      "EOT draws for a model random at test time (--eval_input_noise_sigma, "
      "--eval_dropout): gradients and predictions averaged over K keyed draws; 1: off.",
  )
  eval_input_noise_sigma: float = _field(
      0.0,
      "Attack the model with Gaussian input noise at test time (a random model; use "
      "--attack_eot); 0: the deterministic model, as the paper.",
  )
  eval_dropout: bool = _field(False, "Attack the model with dropout kept on at test time.")

  @property
  def suite(self) -> tuple[str, ...]:
    return tuple(s.strip() for s in self.eval_suite.split(",") if s.strip())

  @property
  def corruptions(self) -> tuple[str, ...]:
    names = tuple(s.strip() for s in self.cifar10c_corruptions.split(",") if s.strip())
    return names or CORRUPTIONS

  def pgd_settings(self) -> dict:
    """{"eps", "steps", "step_size"}: the preset with any explicit flag applied over it."""
    settings = pgd_preset(self.pgd_preset)
    if self.pgd_eps:
      settings["eps"] = tuple(self.pgd_eps)
    if self.pgd_steps:
      settings["steps"] = tuple(self.pgd_steps)
    if self.pgd_step_size:
      settings["step_size"] = self.pgd_step_size
    return settings

  def validate(self) -> "EvalOptions":
    """Raises ConfigError naming the flag; returns self."""
    unknown = [s for s in self.suite if s not in SUITE_ITEMS]
    if unknown or not self.suite:
      raise ConfigError(
          f"--eval_suite: unknown or no evaluation(s) {unknown}; choose from "
          f"{', '.join(SUITE_ITEMS)}"
      )
    for name in (
        "eval_batch_size",
        "pgd_batch_size",
        "pgd_restarts",
        "ece_bins",
        "pgd_sweep_steps",
    ):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    for name in ("pgd_num_examples", "pgd_sweep_num_examples"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name} must be >= 0 (0: all), got {getattr(self, name)}")
    if self.pgd_preset not in PGD_PRESETS:
      raise ConfigError(
          f"--pgd_preset must be one of {sorted(PGD_PRESETS)}, got " f"{self.pgd_preset!r}"
      )
    if any(not 0 <= e <= 1 for e in self.pgd_eps):
      raise ConfigError(f"--pgd_eps values must be in [0, 1] (pixel units), got {self.pgd_eps}")
    if any(int(s) != s or s < 1 for s in self.pgd_steps):
      raise ConfigError(f"--pgd_steps values must be integers >= 1, got {self.pgd_steps}")
    if self.pgd_step_size < 0:
      raise ConfigError(f"--pgd_step_size must be >= 0 (0: preset), got {self.pgd_step_size}")
    if self.pgd_loss not in PGD_LOSSES:
      raise ConfigError(f"--pgd_loss must be one of {PGD_LOSSES}, got {self.pgd_loss!r}")
    if any(not 0 <= e <= 1 for e in self.pgd_eps_sweep):
      raise ConfigError(f"--pgd_eps_sweep values must be in [0, 1], got {self.pgd_eps_sweep}")
    if self.cifar10c_source not in CIFAR10C_SOURCES:
      raise ConfigError(
          f"--cifar10c_source must be one of {CIFAR10C_SOURCES}, got " f"{self.cifar10c_source!r}"
      )
    if self.cifar10c_source == "official" and not self.cifar10c_dir:
      raise ConfigError("--cifar10c_dir is required with --cifar10c_source=official")
    bad = [c for c in self.corruptions if c not in CORRUPTIONS]
    if bad:
      raise ConfigError(f"--cifar10c_corruptions: unknown {bad}; choose from {CORRUPTIONS}")
    if not self.cifar10c_severities or any(s not in SEVERITIES for s in self.cifar10c_severities):
      raise ConfigError(
          f"--cifar10c_severities must be drawn from {SEVERITIES}, got "
          f"{self.cifar10c_severities}"
      )
    if "autoattack" in self.suite:
      check_autoattack(
          eps=self.autoattack_eps,
          version=self.autoattack_version,
          eot=self.attack_eot,
          num_examples=self.autoattack_num_examples,
          batch_size=self.autoattack_batch_size,
          iterations=self.autoattack_iterations,
          square_queries=self.autoattack_square_queries,
      )
      _require(
          self.eval_input_noise_sigma >= 0,
          "eval_input_noise_sigma",
          ">= 0",
          self.eval_input_noise_sigma,
      )
    if "smoothing" in self.suite:  # sigma 0: the run's --input_noise_sigma (resolved later)
      check_smoothing(
          sigma=self.smoothing_sigma or None,
          n0=self.smoothing_n0,
          n=self.smoothing_n,
          alpha=self.smoothing_alpha,
          num_examples=self.smoothing_num_examples,
          batch_size=self.smoothing_batch_size,
          dtype=self.smoothing_dtype,
      )
    return self

  @property
  def random_at_test_time(self) -> bool:
    return bool(self.eval_input_noise_sigma or self.eval_dropout)

  def resolved_smoothing_sigma(self, input_noise_sigma: float = 0.0) -> float:
    """--smoothing_sigma, else the run's --input_noise_sigma; ConfigError if neither."""
    sigma = self.smoothing_sigma or input_noise_sigma
    if sigma <= 0:
      raise ConfigError(
          "--smoothing_sigma: required (> 0) for --eval_suite=...,smoothing: this "
          "run has no --input_noise_sigma to take it from"
      )
    return float(sigma)


# ---------------------------------------------------------------------------------------------
# Checks of values, shared by `EvalOptions.validate` and the evaluators' public functions. An
# argument left None is not checked; `available` is the number of test images to choose from.


def is_int(value) -> bool:
  """An integer (Python's or numpy's), not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value) -> bool:
  try:
    return not isinstance(value, bool) and math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def _require(ok: bool, flag: str, expected: str, value) -> None:
  if not ok:
    raise ConfigError(
        f"--{flag} must be {expected}, got {value!r}"
        if isinstance(value, str)
        else f"--{flag} must be {expected}, got {value}"
    )


def _check_counts(checks, expected="an integer >= 1") -> None:
  for flag, value in checks:
    if value is not None:
      _require(is_int(value) and value >= 1, flag, expected, value)


def _check_num_examples(flag: str, num_examples, available) -> None:
  if num_examples is not None:
    _require(
        is_int(num_examples) and num_examples >= 0,
        flag,
        "an integer >= 0 (0: every test image)",
        num_examples,
    )
    if available is not None:
      _require(
          num_examples <= available, flag, f"at most the {available} test images", num_examples
      )


def check_smoothing(
    *,
    sigma=None,
    n0=None,
    n=None,
    predict_n=None,
    alpha=None,
    num_examples=None,
    available=None,
    batch_size=None,
    dtype=None,
) -> None:
  """Randomized smoothing's values (CERTIFY's n0 and n, PREDICT's n)."""
  if sigma is not None:
    _require(_is_finite(sigma) and sigma > 0, "smoothing_sigma", "a finite number > 0", sigma)
  _check_counts(
      (
          ("smoothing_n0", n0),
          ("smoothing_n", n),
          ("smoothing_predict_n", predict_n),
          ("smoothing_batch_size", batch_size),
      )
  )
  if alpha is not None:
    _require(_is_finite(alpha) and 0 < alpha < 1, "smoothing_alpha", "in (0, 1)", alpha)
  _check_num_examples("smoothing_num_examples", num_examples, available)
  if dtype is not None:
    _require(dtype in SMOOTHING_DTYPES, "smoothing_dtype", f"one of {SMOOTHING_DTYPES}", dtype)


def check_autoattack(
    *,
    eps=None,
    version=None,
    eot=None,
    num_examples=None,
    available=None,
    batch_size=None,
    iterations=None,
    square_queries=None,
) -> None:
  """AutoAttack's values; `eps` one radius or several."""
  if eps is not None:
    values = tuple(eps) if isinstance(eps, (tuple, list)) else (eps,)
    _require(
        bool(values) and all(_is_finite(e) and 0 <= e <= 1 for e in values),
        "autoattack_eps",
        "in [0, 1] (pixel units)",
        eps,
    )
  if version is not None:
    _require(
        version in AUTOATTACK_VERSIONS,
        "autoattack_version",
        f"one of {', '.join(AUTOATTACK_VERSIONS)}",
        version,
    )
  _check_counts(
      (
          ("attack_eot", eot),
          ("autoattack_batch_size", batch_size),
          ("autoattack_iterations", iterations),
          ("autoattack_square_queries", square_queries),
      )
  )
  _check_num_examples("autoattack_num_examples", num_examples, available)
