"""Every option of a run, in one place: its type, default and help text.

`Config` is the single source of truth. `define_flags` turns its fields into absl flags, so a
flagfile in `experiments/` holds only overrides of these defaults, and later command-line flags
override the flagfile. `validate` turns bad values into one-line `ConfigError`s naming the flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

from absl import flags

from nkd.errors import ConfigError
from nkd.evaluation.options import EvalOptions


def _opt(default, help_text, **extra):
  return dataclasses.field(default=default, metadata={"help": help_text, **extra})


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """Options of one training run (teacher, student alone, or distilled student)."""

  # Run identity and places.
  name: str = _opt("", "Experiment name; default: the stem of the last --flagfile, or 'run'.")
  workdir: str = _opt("", "Run folder (config.json, metrics.jsonl, checkpoints/, results.json); "
                      "default: WORKSPACE/runs/NAME/seed_SEED.")
  workspace: str = _opt("workspace", "Root for data caches, shared teachers and default run "
                        "folders (see WORKSPACE.md).")
  seed: int = _opt(0, "Root seed of the run; every random stream derives from it.")
  mode: str = _opt("ce", "'ce': cross-entropy training (teacher, or student alone); 'kd': Hinton "
                   "distillation from a teacher.", choices=("ce", "kd"))

  # Model.
  model: str = _opt("wrn-16-2", "Model, 'wrn-DEPTH-WIDTH' with DEPTH = 6n+4.")
  dropout: float = _opt(0.0, "Dropout rate between the two convolutions of each WRN block.")
  dtype: str = _opt("float32", "Compute dtype (parameters stay float32).",
                    choices=("float32", "bfloat16"))

  # Data.
  dataset: str = _opt("cifar10", "Data set.", choices=("cifar10", "synthetic"))
  data_dir: str = _opt("", "Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz "
                       "(or a TFDS data dir); default: WORKSPACE/data.")
  data_source: str = _opt("auto", "Where CIFAR-10 comes from: 'auto' tries the official Python "
                          "folder, the tarball, TFDS, then a download.",
                          choices=("auto", "python", "tfds"))
  download: bool = _opt(True, "Download CIFAR-10 into --data_dir when it is absent (needs a "
                        "network).")
  train_subset: int = _opt(0, "Use only the first N training images (0: all).")
  validation_size: int = _opt(0, "Hold out the last N training images as a validation split.")
  synthetic_train_size: int = _opt(4096, "Training images of the synthetic data set.")
  synthetic_test_size: int = _opt(1024, "Test images of the synthetic data set.")
  synthetic_seed: int = _opt(0, "Seed of the synthetic data set (fixed across run seeds).")
  augment: bool = _opt(True, "Random crop (pad 4) and horizontal flip, on device.")

  # Optimisation.
  epochs: int = _opt(200, "Training epochs.")
  batch_size: int = _opt(128, "Global batch size (split over the devices).")
  lr: float = _opt(0.1, "Peak learning rate.")
  lr_schedule: str = _opt("step", "'step': multiply by --lr_decay at --lr_milestones; 'cosine': "
                          "cosine decay to 0 over the run.", choices=("step", "cosine"))
  lr_milestones: tuple = _opt((60, 120, 160), "Epochs at which the step schedule decays.",
                              element=int)
  lr_decay: float = _opt(0.2, "Factor of each step-schedule decay.")
  momentum: float = _opt(0.9, "SGD momentum.")
  nesterov: bool = _opt(False, "Nesterov momentum.")
  weight_decay: float = _opt(5e-4, "L2 weight decay (added to the gradient, as PyTorch SGD).")

  # Distillation.
  alpha: float = _opt(0.9, "Weight of the KD term; (1 - alpha) weighs the cross-entropy.")
  tau: float = _opt(4.0, "Distillation temperature.")
  teacher_flagfile: str = _opt("", "Flagfile of the teacher's recipe (mode=kd). Its teacher is "
                               "trained once per recipe and seed, then reused.")
  teacher_seed: int = _opt(0, "Seed of the teacher run to distil from.")
  teacher_flags: tuple = _opt((), "Extra flags for the teacher recipe, e.g. "
                              "--teacher_flags=--epochs=15 (repeatable).", multi=True)
  teacher_workdir: str = _opt("", "Use the finished teacher run in this folder instead of the "
                              "recipe's shared teacher.")

  # Noise (the paper's sources; each is a keyed transform in nkd/noise.py). 0 = off.
  logit_noise_sigma: float = _opt(0.0, "Signal-dependent noise on the teacher's logits, "
                                  "z' = (1 + d) z with d ~ N(0, s^2) (mode=kd).")
  logit_noise_per_sample: bool = _opt(False, "One d per sample instead of one per logit.")
  logit_noise_after_tau: bool = _opt(False, "Apply the logit noise to z / tau instead of the raw "
                                     "logits z.")
  fickle_teacher: bool = _opt(False, "Fickle Teacher: keep the teacher's dropout on while "
                              "distilling, a fresh dropout key every step (mode=kd).")
  teacher_dropout: float = _opt(-1.0, "Dropout rate the teacher recipe is trained with (passed "
                                "to it as --dropout); -1: the recipe's own (mode=kd).")
  teacher_bn_mode: str = _opt("eval", "Teacher BatchNorm while distilling: 'eval' (running "
                              "statistics) or 'batch' (this batch's statistics; never updated).",
                              choices=("eval", "batch"))
  fickle_schedule: bool = _opt(False, "Use the paper's longer student schedule for the teacher's "
                               "dropout r: r<=0.2: 250 epochs (75/150/200), r=0.3: 300 "
                               "(90/180/240), r>=0.4: 350 (105/210/280).")
  input_noise_sigma: float = _opt(0.0, "Soft Randomization: Gaussian noise N(0, s^2) on the "
                                  "student's input pixels in [0, 1]; the teacher sees the clean "
                                  "image. In mode=ce: the student trained alone with that noise.")
  input_noise_clip: bool = _opt(False, "Clip the noisy input to [0, 1].")
  label_noise_p: float = _opt(0.0, "Random label corruption: probability that a sample's label is "
                              "replaced by a wrong class drawn uniformly from the others.")
  label_noise_mode: str = _opt("", "Whose labels are corrupted: 'S' the student's CE term while "
                               "distilling, 'T' the teacher's training, 'TS' both; default: T for "
                               "mode=ce (the run's own labels), S for mode=kd.",
                               choices=("", "S", "T", "TS"))
  label_noise_fixed: bool = _opt(False, "Corrupt once for the whole run instead of re-drawing "
                                 "every epoch.")
  swap_p: float = _opt(0.0, "Random swapping: probability per sample that the teacher's softened "
                       "probabilities are considered for swapping (mode=kd).")
  swap_threshold: float = _opt(0.05, "Swap a pair only if its probabilities differ by less than "
                               "this.")
  swap_mode: str = _opt("top2", "'top2': the two largest; 'all': every consecutive pair in "
                        "sorted order, in turn.", choices=("top2", "all"))
  level_flag: str = _opt("", "The option that is this experiment's noise level (recorded in "
                         "results.json for sweeps and reports); default: the active noise option.")

  # Cadence and bookkeeping (do not change the result).
  log_every: int = _opt(100, "Log progress every N steps.")
  eval_every: int = _opt(1, "Evaluate the test set every N epochs (and at the end).")
  checkpoint_every: int = _opt(1, "Checkpoint every N epochs (and at the end).")
  keep_checkpoints: int = _opt(3, "Checkpoints kept.")
  distributed: bool = _opt(False, "Multi-host: call jax.distributed.initialize() first (it reads "
                           "SLURM / Cloud TPU settings from the environment).")
  gpu_deterministic: bool = _opt(True, "On GPU, set --xla_gpu_deterministic_ops=true so a seed "
                                 "reproduces a run bit-exactly; false trades that for speed.")


# Options that change where or how often things are written, or how a finished run is
# evaluated, never the trained parameters.
BOOKKEEPING = frozenset({
    "name", "workdir", "workspace", "data_dir", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "download", "teacher_workdir", "gpu_deterministic", "level_flag",
    "distributed", *(f.name for f in dataclasses.fields(EvalOptions))})
# Options that only a distillation run uses.
TEACHER_OPTIONS = ("teacher_flagfile", "teacher_workdir", "teacher_flags", "logit_noise_sigma",
                   "logit_noise_per_sample", "logit_noise_after_tau", "fickle_teacher",
                   "teacher_dropout", "teacher_bn_mode", "fickle_schedule", "swap_p")
# The options that can be an experiment's noise level, in the order `level` looks for one.
NOISE_LEVELS = ("input_noise_sigma", "logit_noise_sigma", "teacher_dropout", "label_noise_p",
                "swap_p", "dropout")
# Options a distillation run passes to its teacher's recipe: the teacher sees the same data.
INHERITED_BY_TEACHER = ("workspace", "dataset", "data_dir", "data_source", "download",
                        "train_subset", "validation_size", "synthetic_train_size",
                        "synthetic_test_size", "synthetic_seed", "gpu_deterministic")


@dataclasses.dataclass(frozen=True)
class Config(TrainOptions, EvalOptions):
  """A run's resolved options: training plus evaluation (nkd/evaluation/options.py)."""

  def to_dict(self) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def replace(self, **changes) -> "Config":
    return dataclasses.replace(self, **changes)

  def semantic_dict(self) -> dict[str, Any]:
    """The options that determine the trained parameters."""
    return {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING}

  def differing_options(self, stored_options: dict[str, Any]) -> list[str]:
    """The semantic options whose value differs from a run's stored config.json options."""
    ours = self.semantic_dict()
    return sorted(k for k, v in ours.items() if stored_options.get(k) != v)

  def recipe_hash(self) -> str:
    """Names a recipe: its semantic options except the seed (one recipe, many seeds)."""
    recipe = {k: v for k, v in self.semantic_dict().items() if k != "seed"}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def _element_type(f: dataclasses.Field):
  """int or float, from a `tuple[int, ...]`-style annotation."""
  annotation = str(f.type)
  return float if "float" in annotation else int if "int" in annotation else str


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value


def option_names() -> list[str]:
  return [f.name for f in dataclasses.fields(Config)]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one absl flag per `Config` field."""
  for f in dataclasses.fields(Config):
    meta, default = f.metadata, f.default
    help_text = meta.get("help", "")
    if meta.get("multi"):
      flags.DEFINE_multi_string(f.name, list(default), help_text, flag_values=flag_values)
    elif "choices" in meta:
      flags.DEFINE_enum(f.name, default, list(meta["choices"]), help_text,
                        flag_values=flag_values)
    elif isinstance(default, bool):
      flags.DEFINE_bool(f.name, default, help_text, flag_values=flag_values)
    elif isinstance(default, int):
      flags.DEFINE_integer(f.name, default, help_text, flag_values=flag_values)
    elif isinstance(default, float):
      flags.DEFINE_float(f.name, default, help_text, flag_values=flag_values)
    elif isinstance(default, tuple):
      flags.DEFINE_list(f.name, [str(v) for v in default], help_text, flag_values=flag_values)
    else:
      flags.DEFINE_string(f.name, default, help_text, flag_values=flag_values)


def flag_value(flag_values: flags.FlagValues, f: dataclasses.Field):
  """The value of the flag of field `f`, converted to the field's type."""
  value = flag_values[f.name].value
  if f.metadata.get("multi"):
    return tuple(value or ())
  if isinstance(f.default, tuple):
    element = f.metadata.get("element") or _element_type(f)
    try:
      return tuple(element(v) for v in (value or ()))
    except ValueError:
      raise ConfigError(f"--{f.name} expects a comma-separated list of {element.__name__}, "
                        f"got {','.join(value)!r}") from None
  return value


def from_flags(flag_values: flags.FlagValues, argv: Sequence[str] = ()) -> Config:
  """Builds a resolved, validated Config from parsed flags."""
  values = {f.name: flag_value(flag_values, f) for f in dataclasses.fields(Config)}
  if not values["name"]:
    values["name"] = _flagfile_stem(argv) or "run"
  return resolve(Config(**values))


def parse_flagfile(path: str, extra_flags: Sequence[str] = ()) -> Config:
  """Parses a flagfile (and overrides) into a Config, independently of the global flags."""
  if not os.path.isfile(path):
    raise ConfigError(f"flagfile {path!r} not found")
  fv = flags.FlagValues()
  define_flags(fv)
  argv = ["nkd", f"--flagfile={path}", *extra_flags]
  try:
    fv(argv)
  except flags.Error as e:
    raise ConfigError(f"{path}: {e}") from None
  return from_flags(fv, argv)


def _flagfile_stem(argv: Sequence[str]) -> str:
  stems = [os.path.splitext(os.path.basename(a.split("=", 1)[1]))[0]
           for a in argv if a.startswith("--flagfile=")]
  return stems[-1] if stems else ""


def resolve(config: Config) -> Config:
  """Fills derived defaults (data_dir, workdir) and validates."""
  changes = {}
  if not config.data_dir:
    changes["data_dir"] = os.path.join(config.workspace, "data")
  if not config.workdir:
    changes["workdir"] = os.path.join(config.workspace, "runs", config.name,
                                      f"seed_{config.seed}")
  if not config.label_noise_mode:
    changes["label_noise_mode"] = "S" if config.mode == "kd" else "T"
  if config.fickle_schedule and config.mode == "kd":
    epochs, milestones = fickle_schedule(config.teacher_dropout)
    changes.update(epochs=epochs, lr_milestones=milestones)
  config = config.replace(**changes)
  validate(config)
  return config


def fickle_schedule(rate: float) -> tuple[int, tuple[int, ...]]:
  """The paper's longer student schedule for a Fickle teacher of dropout `rate`."""
  if rate <= 0:
    return 200, (60, 120, 160)
  if rate <= 0.2 + 1e-9:
    return 250, (75, 150, 200)
  if rate <= 0.3 + 1e-9:
    return 300, (90, 180, 240)
  return 350, (105, 210, 280)


def noise_level(config) -> tuple[str | None, float | None]:
  """(option name, value) of the run's noise level: --level_flag, else the first active one."""
  if config.level_flag:
    return config.level_flag, float(getattr(config, config.level_flag))
  for name in NOISE_LEVELS:
    value = getattr(config, name)
    default = Config.__dataclass_fields__[name].default
    if value != default and not (name == "teacher_dropout" and not config.fickle_teacher):
      return name, float(value)
  return None, None


def validate(config: Config) -> None:
  """Raises ConfigError naming the first bad flag."""
  from nkd.models.wrn import parse_model_name  # pylint: disable=g-import-not-at-top

  def check(ok, flag, expected):
    if not ok:
      raise ConfigError(f"--{flag}={_show(getattr(config, flag))}: expected {expected}")

  try:
    EvalOptions.validate(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  try:
    parse_model_name(config.model)
  except ValueError as e:
    raise ConfigError(f"--model: {e}") from None
  check(0 <= config.dropout < 1, "dropout", "a rate in [0, 1)")
  check(config.epochs >= 1, "epochs", "a positive number of epochs")
  check(config.batch_size >= 1, "batch_size", "a positive batch size")
  check(config.lr > 0, "lr", "a positive learning rate")
  check(config.lr_decay > 0, "lr_decay", "a positive factor")
  check(0 <= config.momentum < 1, "momentum", "a value in [0, 1)")
  check(config.weight_decay >= 0, "weight_decay", "a value >= 0")
  check(all(0 < m for m in config.lr_milestones) and
        list(config.lr_milestones) == sorted(config.lr_milestones),
        "lr_milestones", "increasing positive epochs")
  check(0 <= config.alpha <= 1, "alpha", "a weight in [0, 1]")
  check(config.tau > 0, "tau", "a positive temperature")
  check(config.train_subset >= 0, "train_subset", "a count >= 0")
  check(config.validation_size >= 0, "validation_size", "a count >= 0")
  check(config.synthetic_train_size >= 1, "synthetic_train_size", "a positive count")
  check(config.synthetic_test_size >= 1, "synthetic_test_size", "a positive count")
  for flag in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
               "eval_batch_size"):
    check(getattr(config, flag) >= 1, flag, "a positive integer")
  check(config.logit_noise_sigma >= 0, "logit_noise_sigma", "a std >= 0")
  check(config.input_noise_sigma >= 0, "input_noise_sigma", "a std >= 0")
  check(0 <= config.label_noise_p <= 1, "label_noise_p", "a probability in [0, 1]")
  check(0 <= config.swap_p <= 1, "swap_p", "a probability in [0, 1]")
  check(config.swap_threshold >= 0, "swap_threshold", "a threshold >= 0")
  check(config.teacher_dropout == -1 or 0 <= config.teacher_dropout < 1, "teacher_dropout",
        "a rate in [0, 1) (or -1: the recipe's own)")
  if config.mode == "kd":
    check(config.teacher_flagfile or config.teacher_workdir, "teacher_flagfile",
          "a teacher recipe (or --teacher_workdir) for --mode=kd")
  else:
    for flag in TEACHER_OPTIONS:
      default = Config.__dataclass_fields__[flag].default
      check(getattr(config, flag) == default, flag,
            f"{_show(default) if default != '' else 'nothing'}: --mode=ce has no teacher")
    check(config.label_noise_mode in ("", "T"), "label_noise_mode",
          "T in --mode=ce (S and TS corrupt a distilling student's labels: they need a teacher)")
  if config.fickle_schedule:
    check(config.teacher_dropout >= 0, "fickle_schedule",
          "a --teacher_dropout rate to pick the schedule from")
  if config.level_flag:
    check(config.level_flag in NOISE_LEVELS, "level_flag", f"one of {', '.join(NOISE_LEVELS)}")


def corrupts_own_labels(config) -> bool:
  """Whether this run's own cross-entropy labels are corrupted."""
  return config.label_noise_p > 0 and (config.mode == "ce" or
                                       config.label_noise_mode in ("S", "TS"))


def _show(value):
  return ",".join(map(str, value)) if isinstance(value, tuple) else value
