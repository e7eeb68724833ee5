"""The paper's noise sources as options: one frozen dataclass, taken as it is by the train step.

Adding a noise source touches three places: its function in `nkd/noise.py`, its fields here
(help text, `teacher_side`, `level`, a check in `validate`), and its line in the train step
(`nkd/training/steps.py`). Flags, config.json, `--help`, the recipe hash, the
`--mode=ce` checks and sweep/report levels all follow from the fields. Level 0 means off.
"""

from __future__ import annotations

import dataclasses

from nkd.config.fields import opt

SWAP_MODES = ("top2", "all")


def _noise(default, help_text, **extra):
  return opt(default, help_text, group="distillation and noise", **extra)


@dataclasses.dataclass(frozen=True)
class NoiseOptions:
  """Noise injected while training (see nkd/noise.py for each transform)."""

  logit_noise_sigma: float = _noise(
      0.0,
      "Signal-dependent noise on the teacher's logits, "
      "z' = (1 + d) z with d ~ N(0, s^2) (mode=kd).",
      teacher_side=True,
      level=2,
  )
  logit_noise_per_sample: bool = _noise(
      False, "One d per sample instead of one per logit.", teacher_side=True
  )
  fickle_teacher: bool = _noise(
      False,
      "Fickle Teacher: keep the teacher's dropout on while "
      "distilling, a fresh dropout key every step (mode=kd).",
      teacher_side=True,
  )
  teacher_dropout: float = _noise(
      -1.0,
      "Dropout rate the teacher recipe is trained with "
      "(passed to it as --dropout); -1: the recipe's own (mode=kd).",
      teacher_side=True,
      level=3,
  )
  teacher_bn_mode: str = _noise(
      "eval",
      "Teacher BatchNorm while distilling: 'eval' (running "
      "statistics) or 'batch' (this batch's statistics; never "
      "updated).",
      choices=("eval", "batch"),
      teacher_side=True,
  )
  fickle_schedule: bool = _noise(
      False,
      "Use the paper's longer student schedule for the "
      "teacher's dropout r: r<=0.2: 250 epochs (75/150/200), r=0.3: "
      "300 (90/180/240), r>=0.4: 350 (105/210/280).",
      teacher_side=True,
  )
  input_noise_sigma: float = _noise(
      0.0,
      "Soft Randomization: Gaussian noise N(0, s^2) on the "
      "student's input pixels in [0, 1]; the teacher sees the "
      "clean image. In mode=ce: the student trained alone with "
      "that noise.",
      level=1,
  )
  input_noise_clip: bool = _noise(False, "Clip the noisy input to [0, 1].")
  label_noise_p: float = _noise(
      0.0,
      "Random label corruption: probability that a sample's "
      "label is replaced by a wrong class drawn uniformly from the "
      "others.",
      level=4,
  )
  label_noise_mode: str = _noise(
      "",
      "Whose labels are corrupted: 'S' the student's CE term "
      "while distilling, 'T' the teacher's training, 'TS' both; "
      "default: T for mode=ce (the run's own labels), S for mode=kd.",
      choices=("", "S", "T", "TS"),
  )
  label_noise_fixed: bool = _noise(
      False, "Corrupt once for the whole run instead of re-drawing " "every epoch."
  )
  label_noise_shared: bool = _noise(
      False,
      "Mode TS: the student trains on exactly its teacher's "
      "corrupted labels (the teacher's stream, every epoch), for "
      "every seed; default: a stream of the student's own, "
      "independent of the teacher's (docs/FIDELITY.md).",
      teacher_side=True,
      omit_default=True,
  )
  swap_p: float = _noise(
      0.0,
      "Random swapping: probability per sample that the teacher's "
      "softened probabilities are considered for swapping (mode=kd).",
      teacher_side=True,
      level=5,
  )
  swap_threshold: float = _noise(
      0.05, "Swap a pair only if its probabilities differ by less " "than this."
  )
  swap_mode: str = _noise(
      "top2",
      "'top2': the two largest; 'all': every consecutive pair in " "sorted order, in turn.",
      choices=SWAP_MODES,
  )

  @classmethod
  def of(cls, options) -> "NoiseOptions":
    """The noise options of any object that has them as attributes (a Config)."""
    return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})

  def checks(self) -> list[tuple[bool, str, str]]:
    """(ok, flag, expected) for every noise option."""
    return [
        (self.logit_noise_sigma >= 0, "logit_noise_sigma", "a std >= 0"),
        (self.input_noise_sigma >= 0, "input_noise_sigma", "a std >= 0"),
        (0 <= self.label_noise_p <= 1, "label_noise_p", "a probability in [0, 1]"),
        (0 <= self.swap_p <= 1, "swap_p", "a probability in [0, 1]"),
        (self.swap_threshold >= 0, "swap_threshold", "a threshold >= 0"),
        (
            self.teacher_dropout == -1 or 0 <= self.teacher_dropout < 1,
            "teacher_dropout",
            "a rate in [0, 1) (or -1: the recipe's own)",
        ),
        (
            not self.fickle_schedule or self.teacher_dropout >= 0,
            "fickle_schedule",
            "a --teacher_dropout rate to pick the schedule from",
        ),
    ]
