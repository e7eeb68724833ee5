"""Named PRNG keys: the one registry of stream tags.

One root key per run; each purpose gets its own stream by a stable tag, so adding a purpose
never shifts another's stream. Run-level keys come from the seed (`run_keys`); inside the jitted
train step the step's key is `fold_in(train_key, step)` and each source of randomness in the
step takes `step_key_for(step_key, name)`, so a resumed run needs nothing but the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
  """The run's named keys, all derived from `seed`: fold_in(key(seed), tag) per purpose."""
  root = jax.random.key(seed)
  return {name: fold_in(root, tag) for name, tag in RUN_KEY_TAGS.items()}


def fold_in(key: jax.Array, data: int) -> jax.Array:
  """jax.random.fold_in(key, data) for one key, outside any trace: the same key, computed on the
  host for threefry2x32 keys (see `_threefry2x32`), by JAX for others."""
  if not _host_threefry(key):
    return jax.random.fold_in(key, data)
  return _wrap(_fold_in(_words(key), data))


def split(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """jax.random.split(key) (two keys) for one key, outside any trace; as `fold_in`."""
  if not (_host_threefry(key) and jax.config.jax_threefry_partitionable):
    first, second = jax.random.split(key)
    return first, second
  first, second = _split(_words(key))
  return _wrap(first), _wrap(second)


def label_noise_key(seed: int, role: str) -> jax.Array:
  """The label-noise stream of `role` ("teacher" or "student") of the run with `seed`; the
  epoch's corruption comes from fold_in(this, epoch), or from this key itself when fixed."""
  if role not in LABEL_ROLE_TAGS:
    raise KeyError(f"unknown label-noise role {role!r}; known: {sorted(LABEL_ROLE_TAGS)}")
  return fold_in(run_keys(seed)["label_noise"], LABEL_ROLE_TAGS[role])


def step_key_for(step_key: jax.Array, name: str) -> jax.Array:
  """The key of one source of randomness of a train step: `fold_in(step_key, tag)`."""
  if name not in STEP_KEY_TAGS:
    raise KeyError(f"unknown step stream {name!r}; known: {sorted(STEP_KEY_TAGS)}")
  return jax.random.fold_in(step_key, STEP_KEY_TAGS[name])


def epoch_permutation(data_key: jax.Array, epoch: int, n: int) -> jax.Array:
  """The order of the training set in `epoch`: jax.random.permutation(fold_in(data_key,
  epoch), n), int32. Computed on the host (see `_threefry2x32`): the same integers."""
  if not (_host_threefry(data_key) and jax.config.jax_threefry_partitionable):
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
  key = _fold_in(_words(data_key), epoch)
  order = np.arange(n, dtype=np.int32)
  # jax.random's shuffle: rounds of a stable sort by fresh 32-bit keys, enough rounds that
  # all n elements likely get distinct key strings.
  rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
  for _ in range(rounds):
    key, subkey = _split(key)
    bits = _bits(subkey, n)
    order = order[np.argsort(bits, kind="stable")]
  return jnp.asarray(order)


# ----- threefry2x32 on the host -----------------------------------------------------------------
# The run-level keys and the epoch's order are integer functions of the seed, computed here with
# numpy instead of compiled JAX programs (a program each: 0.2-0.4 s of compiling per process on
# a 2-vCPU CPU, BENCHMARKS.md). They follow jax.random's threefry2x32 with
# jax_threefry_partitionable (which nkd.pipeline sets) word for word; tests/test_keys.py checks
# them against jax.random.fold_in, split, bits and permutation.

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_TRACER = getattr(jax.core, "Tracer", ())  # a key inside a trace: JAX computes its streams


def _threefry2x32(key: tuple, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Threefry-2x32 with 20 rounds (Salmon et al., 2011), as jax.random's: uint32 arrays."""
  k0, k1 = np.uint32(key[0]), np.uint32(key[1])
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0 = np.asarray(x0, np.uint32) + ks[0]
  x1 = np.asarray(x1, np.uint32) + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def _host_threefry(key: jax.Array) -> bool:
  """A single concrete typed threefry2x32 key (what nkd makes, outside a trace), whose streams
  `_threefry2x32` computes."""
  return (
      isinstance(key, jax.Array)
      and not isinstance(key, _TRACER)
      and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
      and key.shape == ()
      and str(jax.random.key_impl(key)) == "threefry2x32"
  )


def _wrap(words: tuple[int, int]) -> jax.Array:
  return jax.random.wrap_key_data(np.asarray(words, np.uint32), impl="threefry2x32")


def _words(key: jax.Array) -> tuple[int, int]:
  data = np.asarray(jax.random.key_data(key), np.uint32)
  return int(data[0]), int(data[1])


def _fold_in(key: tuple, data: int) -> tuple[int, int]:
  y0, y1 = _threefry2x32(key, np.zeros(1, np.uint32), np.array([data], np.uint32))
  return int(y0[0]), int(y1[0])


def _split(key: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
  b0, b1 = _threefry2x32(key, np.zeros(2, np.uint32), np.arange(2, dtype=np.uint32))
  return (int(b0[0]), int(b1[0])), (int(b0[1]), int(b1[1]))


def _bits(key: tuple, n: int) -> np.ndarray:
  b0, b1 = _threefry2x32(key, np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32))
  return b0 ^ b1
