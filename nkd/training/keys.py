"""Named PRNG keys. One root key per run; each purpose gets its own stream by a stable tag,
so adding a purpose never shifts another's stream, and a step's key needs only the step."""

from __future__ import annotations

import jax

# Stable tags for the run-level keys; never renumber.
RUN_KEY_TAGS = {"init": 0, "data": 1, "train": 2, "eval": 3, "label_noise": 4}


def run_keys(seed: int) -> dict[str, jax.Array]:
  """The run's named keys, all derived from `seed`."""
  root = jax.random.key(seed)
  return {name: jax.random.fold_in(root, tag) for name, tag in RUN_KEY_TAGS.items()}


def epoch_permutation(data_key: jax.Array, epoch: int, n: int) -> jax.Array:
  """The order of the training set in `epoch`."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
