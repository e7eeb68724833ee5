"""The run, data, model, optimiser and distillation options (`TrainOptions`), one field each:
type, default, help text and metadata (nkd/config/fields.py). Plain Python: no jax."""

from __future__ import annotations

import dataclasses

from nkd import runtime
from nkd.config import fields as fields_lib


def _opt(default, help_text, group="run and data", **extra):
  return fields_lib.opt(default, help_text, group=group, **extra)


def _model_opt(default, help_text, **extra):
  return _opt(default, help_text, group="model and optimiser", **extra)


def _kd_opt(default, help_text, **extra):
  return _opt(default, help_text, group="distillation and noise", **extra)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """Options of one training run (teacher, student alone, or distilled student)."""

  # Run identity and places.
  name: str = _opt(
      "", "Experiment name; default: the stem of the last --flagfile, or 'run'.", bookkeeping=True
  )
  workdir: str = _opt(
      "",
      "Run folder (config.json, metrics.jsonl, checkpoints/, results.json); "
      "default: WORKSPACE/runs/NAME/seed_SEED.",
      bookkeeping=True,
  )
  workspace: str = _opt(
      "workspace",
      "Root for data caches, shared teachers and default run " "folders (see WORKSPACE.md).",
      bookkeeping=True,
      teacher_inherits=True,
  )
  seed: int = _opt(0, "Root seed of the run; every random stream derives from it.")
  mode: str = _opt(
      "ce",
      "'ce': cross-entropy training (teacher, or student alone); 'kd': Hinton "
      "distillation from a teacher.",
      choices=("ce", "kd"),
  )

  # Model.
  model: str = _model_opt("wrn-16-2", "Model, 'wrn-DEPTH-WIDTH' with DEPTH = 6n+4.")
  dropout: float = _model_opt(
      0.0, "Dropout rate between the two convolutions of each WRN " "block.", level=6
  )
  dtype: str = _model_opt(
      "float32", "Compute dtype (parameters stay float32).", choices=("float32", "bfloat16")
  )

  # Data.
  dataset: str = _opt("cifar10", "Data set.", choices=("cifar10", "synthetic"), data=True)
  data_dir: str = _opt(
      "",
      "Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz "
      "(or a TFDS data dir); default: WORKSPACE/data.",
      bookkeeping=True,
      data=True,
  )
  data_source: str = _opt(
      "auto",
      "Where CIFAR-10 comes from: 'auto' tries the official Python "
      "folder, the tarball, TFDS, then a download.",
      choices=("auto", "python", "tfds"),
      data=True,
  )
  download: bool = _opt(
      True,
      "Download CIFAR-10 into --data_dir when it is absent (needs a " "network).",
      bookkeeping=True,
      teacher_inherits=True,
  )
  train_subset: int = _opt(0, "Use only the first N training images (0: all).", data=True)
  validation_size: int = _opt(
      0, "Hold out the last N training images as a validation split.", data=True
  )
  synthetic_train_size: int = _opt(4096, "Training images of the synthetic data set.", data=True)
  synthetic_test_size: int = _opt(1024, "Test images of the synthetic data set.", data=True)
  synthetic_seed: int = _opt(
      0, "Seed of the synthetic data set (fixed across run seeds).", data=True
  )
  augment: bool = _opt(True, "Random crop (pad 4) and horizontal flip, on device.")

  # Optimisation.
  epochs: int = _model_opt(200, "Training epochs.")
  batch_size: int = _model_opt(128, "Global batch size (split over the devices).")
  lr: float = _model_opt(0.1, "Peak learning rate.")
  lr_schedule: str = _model_opt(
      "step",
      "'step': multiply by --lr_decay at --lr_milestones; 'cosine': "
      "cosine decay to 0 over the run.",
      choices=("step", "cosine"),
  )
  lr_milestones: tuple = _model_opt(
      (60, 120, 160), "Epochs at which the step schedule decays.", element=int
  )
  lr_decay: float = _model_opt(0.2, "Factor of each step-schedule decay.")
  momentum: float = _model_opt(0.9, "SGD momentum.")
  nesterov: bool = _model_opt(False, "Nesterov momentum.")
  weight_decay: float = _model_opt(5e-4, "L2 weight decay (added to the gradient, as PyTorch SGD).")

  # Distillation.
  alpha: float = _kd_opt(0.9, "Weight of the KD term; (1 - alpha) weighs the cross-entropy.")
  tau: float = _kd_opt(4.0, "Distillation temperature.")
  teacher_flagfile: str = _kd_opt(
      "",
      "Flagfile of the teacher's recipe (mode=kd). Its teacher "
      "is trained once per recipe and seed, then reused.",
      teacher_side=True,
  )
  teacher_seed: int = _kd_opt(0, "Seed of the teacher run to distil from.")
  teacher_seeds: tuple = _kd_opt(
      (),
      "Teacher selection: train (or reuse) the teacher recipe "
      "with each of these seeds and distil from the best by "
      "--teacher_select, e.g. 0,10,20,30,40 as the paper; empty: the "
      "one --teacher_seed.",
      element=int,
      teacher_side=True,
      omit_default=True,
      nonempty=True,
  )
  teacher_select: str = _kd_opt(
      "test",
      "How --teacher_seeds picks the teacher: 'test', the "
      "highest test accuracy (the paper); 'val', the highest accuracy "
      "on the --validation_size split held out of the training set.",
      choices=("test", "val"),
      teacher_side=True,
      omit_default=True,
  )
  teacher_flags: tuple = _kd_opt(
      (),
      "Extra flags for the teacher recipe, e.g. " "--teacher_flags=--epochs=15 (repeatable).",
      multi=True,
      teacher_side=True,
  )
  teacher_workdir: str = _kd_opt(
      "",
      "Use the finished teacher run in this folder instead of " "the recipe's shared teacher.",
      teacher_side=True,
      bookkeeping=True,
  )

  level_flag: str = _opt(
      "",
      "The option that is this experiment's noise level (recorded in "
      "results.json for sweeps and reports); default: the active noise option.",
      bookkeeping=True,
  )

  # Cadence and bookkeeping (do not change the result).
  log_every: int = _opt(100, "Log progress every N steps.", bookkeeping=True)
  eval_every: int = _opt(
      1, "Evaluate the test set every N epochs (and at the end).", bookkeeping=True
  )
  checkpoint_every: int = _opt(1, "Checkpoint every N epochs (and at the end).", bookkeeping=True)
  keep_checkpoints: int = _opt(3, "Checkpoints kept.", bookkeeping=True)
  tensorboard: bool = _opt(
      True,
      "Write TensorBoard event files into the run folder. Train "
      "loss, accuracy, lr and img/s every --log_every window, test "
      "accuracy, the final evaluation's headline numbers (nkd/tensorboard"
      ".py); `tensorboard --logdir WORKSPACE` shows every run side by side.",
      bookkeeping=True,
      teacher_inherits=True,
  )
  distributed: bool = _opt(
      False,
      "Multi-host: call jax.distributed.initialize() first (it reads "
      "SLURM / Cloud TPU settings from the environment).",
      bookkeeping=True,
  )
  gpu_deterministic: bool = _opt(
      True,
      "On GPU, set --xla_gpu_deterministic_ops=true so a seed "
      "reproduces a run bit-exactly; false trades that for speed.",
      bookkeeping=True,
      teacher_inherits=True,
  )
  cpu_isa: str = _opt(
      runtime.DEFAULT_CPU_ISA,
      "On x86 CPUs, the newest instruction set XLA "
      "and oneDNN may use (--xla_cpu_max_isa, ONEDNN_MAX_CPU_ISA): AVX2 gives "
      "the same numbers on x86-64 CPUs with AVX2, the same core count and L1d "
      "size (WORKSPACE.md); 'native' uses this CPU's (other numbers). Your own "
      "XLA_FLAGS or ONEDNN_MAX_CPU_ISA wins.",
      choices=(runtime.NATIVE, *runtime.CPU_ISAS),
      bookkeeping=True,
      teacher_inherits=True,
  )
