"""Named PRNG keys: the one registry of stream tags.

One root key per run; each purpose gets its own stream by a stable tag, so adding a purpose
never shifts another's stream. Run-level keys come from the seed (`run_keys`); inside the jitted
train step the step's key is `fold_in(train_key, step)` and each source of randomness in the
step takes `step_key_for(step_key, name)`, so a resumed run needs nothing but the step.
"""

from __future__ import annotations

import functools

import jax

# Stable tags; never renumber: a tag change shifts that stream for every run.
RUN_KEY_TAGS = {"init": 0, "data": 1, "train": 2, "eval": 3, "label_noise": 4}
STEP_KEY_TAGS = {
    "augment": 1,
    "dropout": 2,
    "teacher_dropout": 3,
    "signal_noise": 4,
    "input_noise": 5,
    "swap": 8,
}
# Label-noise streams by role, folded into the run's "label_noise" key: a teacher (any
# --mode=ce run) and a distilling student draw different corruptions even for equal seeds.
LABEL_ROLE_TAGS = {"teacher": 0, "student": 1}


def run_keys(seed: int) -> dict[str, jax.Array]:
  """The run's named keys, all derived from `seed`."""
  return _named(jax.random.key(seed))


@jax.jit
def _named(root: jax.Array) -> dict[str, jax.Array]:
  # One compiled program (eager fold_ins are two); integer arithmetic: the same keys.
  return {name: jax.random.fold_in(root, tag) for name, tag in RUN_KEY_TAGS.items()}


def label_noise_key(seed: int, role: str) -> jax.Array:
  """The label-noise stream of `role` ("teacher" or "student") of the run with `seed`; the
  epoch's corruption comes from fold_in(this, epoch), or from this key itself when fixed."""
  if role not in LABEL_ROLE_TAGS:
    raise KeyError(f"unknown label-noise role {role!r}; known: {sorted(LABEL_ROLE_TAGS)}")
  return jax.random.fold_in(run_keys(seed)["label_noise"], LABEL_ROLE_TAGS[role])


def step_key_for(step_key: jax.Array, name: str) -> jax.Array:
  """The key of one source of randomness of a train step: `fold_in(step_key, tag)`."""
  if name not in STEP_KEY_TAGS:
    raise KeyError(f"unknown step stream {name!r}; known: {sorted(STEP_KEY_TAGS)}")
  return jax.random.fold_in(step_key, STEP_KEY_TAGS[name])


@functools.partial(jax.jit, static_argnums=2)
def epoch_permutation(data_key: jax.Array, epoch: int, n: int) -> jax.Array:
  """The order of the training set in `epoch` (one compiled program per run)."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
