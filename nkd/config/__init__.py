"""Every option of a run, in one place: its type, default and help text.

`Config` is the single source of truth, built from option groups: `TrainOptions` (run, data,
model, optimiser, distillation), `NoiseOptions` (nkd/config/noise.py) and `EvalOptions`
(nkd/config/evaluation.py). `define_flags` turns its fields into absl flags, so a flagfile in
`experiments/` holds only overrides of these defaults, and later command-line flags override the
flagfile. The config owns its text form: `Config.to_flags` and `Config.from_options` are the one
conversion to flags and from stored options. `validate` turns bad values into one-line
`ConfigError`s naming the flag. Plain Python: importing this module imports no jax.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Sequence

from absl import flags, logging

from nkd.config import fields as fields_lib
from nkd.config.evaluation import EvalOptions
from nkd.config.noise import NoiseOptions
from nkd.config.train import TrainOptions
from nkd.errors import ConfigError

_MODEL_NAME = re.compile(r"^wrn-(\d+)-(\d+)$")


def parse_model_name(name: str) -> tuple[int, int]:
  """'wrn-40-2' -> (40, 2). Raises ValueError with the expected form."""
  m = _MODEL_NAME.match(name)
  if not m:
    raise ValueError(f"unknown model {name!r}: expected 'wrn-DEPTH-WIDTH', e.g. 'wrn-16-2'")
  depth, width = int(m.group(1)), int(m.group(2))
  if depth < 10 or (depth - 4) % 6:
    raise ValueError(
        f"model {name!r}: WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), " f"got {depth}"
    )
  if width < 1:
    raise ValueError(f"model {name!r}: widen factor must be >= 1, got {width}")
  return depth, width


@dataclasses.dataclass(frozen=True)
class Config(TrainOptions, NoiseOptions, EvalOptions):
  """A run's resolved options: training, noise and evaluation."""

  @classmethod
  def fields_by_name(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}

  @classmethod
  def from_options(cls, options: dict[str, Any], **overrides) -> "Config":
    """A Config (unresolved) from stored options (config.json's `options`, a sweep point),
    converted to the fields' types; names that are not options are ignored."""
    fields = cls.fields_by_name()
    values = {k: fields_lib.from_value(fields[k], v) for k, v in options.items() if k in fields}
    if options.get("logit_noise_after_tau"):
      logging.warning(
          "these stored options set logit_noise_after_tau, since removed: that run "
          "put the logit noise on z / tau, equal to this version's (1 + d) z / tau "
          "up to float rounding"
      )
    return cls(**{**values, **overrides})

  def to_dict(self) -> dict[str, Any]:
    return {f.name: fields_lib.jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def to_flags(self, names: Sequence[str] | None = None) -> list[str]:
    """Command-line flags that reproduce these options (all, or `names`)."""
    names = names if names is not None else [f.name for f in dataclasses.fields(self)]
    return fields_lib.as_flags({n: getattr(self, n) for n in names}, self.fields_by_name())

  def replace(self, **changes) -> "Config":
    return dataclasses.replace(self, **changes)

  @property
  def noise(self) -> NoiseOptions:
    return NoiseOptions.of(self)

  def semantic_dict(self) -> dict[str, Any]:
    """The options that determine the trained parameters; an `omit_default` option only where
    it is set (so recipes from before it existed keep their hash)."""
    fields = self.fields_by_name()
    return {
        k: v
        for k, v in self.to_dict().items()
        if k not in BOOKKEEPING
        and not (
            fields[k].metadata.get("omit_default") and v == fields_lib.jsonable(fields[k].default)
        )
    }

  def differing_options(self, stored_options: dict[str, Any]) -> list[str]:
    """The semantic options whose value differs from a run's stored config.json options (an
    `omit_default` option absent there was at its default)."""
    fields, ours = self.fields_by_name(), self.to_dict()
    missing = object()

    def stored(name):
      default = (
          fields_lib.jsonable(fields[name].default)
          if fields[name].metadata.get("omit_default")
          else missing
      )
      return stored_options.get(name, default)

    return sorted(
        [k for k, v in ours.items() if k not in BOOKKEEPING and stored(k) != v]
        + [k for k, v in RETIRED.items() if stored_options.get(k, v) != v]
    )

  def recipe_hash(self) -> str:
    """Names a recipe: its semantic options except the seed (one recipe, many seeds)."""
    recipe = {**RETIRED, **{k: v for k, v in self.semantic_dict().items() if k != "seed"}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def _with_metadata(key: str) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(Config) if f.metadata.get(key)]


# Options that change where or how often things are written, or how a finished run is
# evaluated (every EvalOptions field), never the trained parameters; and the two that set how the
# device computes (gpu_deterministic, cpu_isa): they change the bits of the result like the
# device kind does, so they are recorded in config.json with the device, not part of the recipe.
BOOKKEEPING = frozenset(f.name for f in _with_metadata("bookkeeping"))
# The options that decide a run's training and test data.
DATA_OPTIONS = tuple(f.name for f in _with_metadata("data"))
# Options removed after runs were made, with the value every run had but those that set them
# (docs/FIDELITY.md says why each went): the recipe hash still counts that value, so every other
# run keeps its hash, and a stored config with the other value differs from every run made now.
RETIRED = {"logit_noise_after_tau": False}
# Options a distillation run passes to its teacher's recipe: the teacher sees the same data, in
# the same places, computed the same way.
INHERITED_BY_TEACHER = tuple(
    f.name
    for f in dataclasses.fields(Config)
    if f.metadata.get("data") or f.metadata.get("teacher_inherits")
)
# Options that only a distillation run uses.
TEACHER_OPTIONS = tuple(f.name for f in _with_metadata("teacher_side"))
# The options that can be an experiment's noise level, in the order `noise_level` looks.
NOISE_LEVELS = tuple(
    f.name for f in sorted(_with_metadata("level"), key=lambda f: f.metadata["level"])
)


def option_names() -> list[str]:
  return [f.name for f in dataclasses.fields(Config)]


def as_flag(name: str, value: Any) -> str:
  return fields_lib.as_flag(name, value)


def define_flags(
    flag_values: flags.FlagValues = flags.FLAGS,
    names: Sequence[str] | None = None,
    module_name: str | None = None,
) -> None:
  """Defines one absl flag per `Config` field (or per field in `names`)."""
  fields = dataclasses.fields(Config)
  if names is not None:
    fields = [f for f in fields if f.name in set(names)]
  fields_lib.define(fields, flag_values, module_name)


def from_flags(flag_values: flags.FlagValues, argv: Sequence[str] = ()) -> Config:
  """Builds a resolved, validated Config from parsed flags."""
  values = fields_lib.values_from_flags(dataclasses.fields(Config), flag_values)
  for f in dataclasses.fields(Config):
    if f.metadata.get("nonempty") and flag_values[f.name].present and not values[f.name]:
      raise ConfigError(f"--{f.name}: expected at least one value, got none")
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


def teacher_config(config, seed: int | None = None):
  """The teacher's Config: its recipe's flagfile, the student's data options, the teacher seed
  (`seed`, else --teacher_seed)."""
  inherited = config.to_flags(INHERITED_BY_TEACHER)
  noise = []
  if config.teacher_dropout >= 0:
    noise.append(as_flag("dropout", config.teacher_dropout))
  if config.label_noise_p > 0 and config.label_noise_mode in ("T", "TS"):
    noise += [
        as_flag("label_noise_p", config.label_noise_p),
        "--label_noise_mode=T",
        as_flag("label_noise_fixed", config.label_noise_fixed),
    ]
  teacher = parse_flagfile(
      config.teacher_flagfile,
      [
          *inherited,
          *noise,
          f"--seed={config.teacher_seed if seed is None else seed}",
          *config.teacher_flags,
      ],
  )
  if teacher.mode != "ce":
    raise ConfigError(
        f"--teacher_flagfile={config.teacher_flagfile}: a teacher recipe must "
        f"train with --mode=ce, not {teacher.mode}"
    )
  workdir = os.path.join(
      config.workspace,
      "teachers",
      f"{teacher.name}-{teacher.recipe_hash()}",
      f"seed_{teacher.seed}",
  )
  return teacher.replace(workdir=workdir)


def _flagfile_stem(argv: Sequence[str]) -> str:
  stems = [
      os.path.splitext(os.path.basename(a.split("=", 1)[1]))[0]
      for a in argv
      if a.startswith("--flagfile=")
  ]
  return stems[-1] if stems else ""


def resolve(config: Config) -> Config:
  """Fills derived defaults (data_dir, workdir) and validates."""
  changes = {}
  if not config.data_dir:
    changes["data_dir"] = os.path.join(config.workspace, "data")
  if not config.workdir:
    changes["workdir"] = os.path.join(config.workspace, "runs", config.name, f"seed_{config.seed}")
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

  def check(ok, flag, expected):
    if not ok:
      raise ConfigError(f"--{flag}={_show(getattr(config, flag))}: expected {expected}")

  EvalOptions.validate(config)
  if "smoothing" in config.suite:
    config.resolved_smoothing_sigma(config.input_noise_sigma)
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
  check(
      all(0 < m for m in config.lr_milestones)
      and list(config.lr_milestones) == sorted(config.lr_milestones),
      "lr_milestones",
      "increasing positive epochs",
  )
  check(0 <= config.alpha <= 1, "alpha", "a weight in [0, 1]")
  check(config.tau > 0, "tau", "a positive temperature")
  check(config.train_subset >= 0, "train_subset", "a count >= 0")
  check(config.validation_size >= 0, "validation_size", "a count >= 0")
  check(config.synthetic_train_size >= 1, "synthetic_train_size", "a positive count")
  check(config.synthetic_test_size >= 1, "synthetic_test_size", "a positive count")
  for flag in (
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
      "eval_batch_size",
  ):
    check(getattr(config, flag) >= 1, flag, "a positive integer")
  for ok, flag, expected in config.noise.checks():
    check(ok, flag, expected)
  if config.mode == "kd":
    check(
        config.teacher_flagfile or config.teacher_workdir,
        "teacher_flagfile",
        "a teacher recipe (or --teacher_workdir) for --mode=kd",
    )
    _validate_teacher_selection(config, check)
  else:
    for flag in TEACHER_OPTIONS:
      default = Config.__dataclass_fields__[flag].default
      check(
          getattr(config, flag) == default,
          flag,
          f"{_show(default) if default != '' else 'nothing'}: --mode=ce has no teacher",
      )
    check(
        config.label_noise_mode in ("", "T"),
        "label_noise_mode",
        "T in --mode=ce (S and TS corrupt a distilling student's labels: they need a teacher)",
    )
  if config.level_flag:
    check(config.level_flag in NOISE_LEVELS, "level_flag", f"one of {', '.join(NOISE_LEVELS)}")


def _validate_teacher_selection(config, check) -> None:
  """--teacher_seeds / --teacher_select and --label_noise_shared of a distillation run."""
  seeds = config.teacher_seeds
  check(len(set(seeds)) == len(seeds), "teacher_seeds", "distinct seeds")
  if seeds:
    check(
        not config.teacher_workdir,
        "teacher_workdir",
        "nothing with --teacher_seeds (each candidate is trained from --teacher_flagfile)",
    )
    check(
        config.teacher_seed == Config.__dataclass_fields__["teacher_seed"].default,
        "teacher_seed",
        "its default with --teacher_seeds (give one or the other)",
    )
  if config.teacher_select != "test":
    check(seeds, "teacher_select", "--teacher_seeds, the candidates to select from")
    check(
        teacher_validation_size(config) > 0,
        "teacher_select",
        "--validation_size > 0 for 'val' (a split held out of the training set to select on)",
    )
  if config.label_noise_shared:
    check(
        config.label_noise_p > 0 and config.label_noise_mode == "TS",
        "label_noise_shared",
        "--label_noise_mode=TS and --label_noise_p > 0 (only then is the teacher trained on "
        "corrupted labels to share)",
    )


def teacher_validation_size(config) -> int:
  """The --validation_size the teacher recipe gets: the student's, or its --teacher_flags'."""
  size = config.validation_size
  for flag in config.teacher_flags:
    if flag.startswith("--validation_size="):
      try:
        size = int(flag.split("=", 1)[1])
      except ValueError:
        pass  # the teacher's own parse reports it
  return size


def corrupts_own_labels(config) -> bool:
  """Whether this run's own cross-entropy labels are corrupted."""
  return config.label_noise_p > 0 and (
      config.mode == "ce" or config.label_noise_mode in ("S", "TS")
  )


def _show(value):
  return ",".join(map(str, value)) if isinstance(value, tuple) else value
