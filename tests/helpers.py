"""Shared test helpers: tiny run configs and flags, the one subprocess runner and its
one-line-error check, and small models trained here in seconds for the evaluators' tests.
Fixtures built from these (finished runs shared by a session) live in conftest.py."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nkd import runtime
from nkd.evaluation.predict import eval_apply_fn
from nkd.models.wrn import create_model, init_variables

REPO = Path(__file__).resolve().parents[1]
# PyTorch is optional (the bench's reference columns); tests that need it skip without it.
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"

# What the test processes compile with (conftest.py), and what the children of smoke tests whose
# checks relate the child's own runs (the GPU report, the GPU check, a multi-process run) get as
# a user's XLA_FLAGS setting, used and recorded: LLVM at -O0, and XLA:CPU's older loop-fusion
# code generator instead of its MLIR fusion emitters, which set up MLIR contexts and run an MLIR
# pipeline for every program (a tiny KD step compiled at -O0 in 3.7-4.9 s of CPU with them,
# 1.6-1.8 s without; a one-operation program 45 ms against 19: BENCHMARKS.md). Both change the
# bits. Children whose bits a test pins or compares across processes keep nkd's settings, as a
# user's runs do.
TEST_OPT_LEVEL = "0"
FUSION_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters"
TEST_COMPILE_SETTINGS = {runtime.OPT_LEVEL_FLAG: TEST_OPT_LEVEL}
if runtime.known_xla_flags((FUSION_EMITTERS_FLAG,)):  # a jaxlib without it keeps its emitters
  TEST_COMPILE_SETTINGS[FUSION_EMITTERS_FLAG] = "false"


def compile_settings_for_tests(xla_flags: str) -> dict[str, str]:
  """The settings of TEST_COMPILE_SETTINGS the tests add over `xla_flags`: their LLVM level
  always (it wins over nkd's -O1), the emitter setting only where the flags have none."""
  return {
      name: value
      for name, value in TEST_COMPILE_SETTINGS.items()
      if name == runtime.OPT_LEVEL_FLAG or f"{name}=" not in xla_flags
  }


def fast_compile_flags(xla_flags: str | None = None) -> str:
  """XLA_FLAGS (this process's by default) with `compile_settings_for_tests` of them last."""
  flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
  ours = " ".join(f"{name}={value}" for name, value in compile_settings_for_tests(flags).items())
  return f"{flags} {ours}".strip()


# A tiny, fast run: WRN-10-1 on a small synthetic set.
TINY = dict(
    dataset="synthetic",
    model="wrn-10-1",
    synthetic_train_size=256,
    synthetic_test_size=128,
    batch_size=32,
    epochs=2,
    lr_schedule="cosine",
    log_every=4,
    eval_suite="accuracy",
)


def tiny_config(tmp_path, **overrides):
  from nkd import config as config_lib  # pylint: disable=g-import-not-at-top

  values = {**TINY, "workspace": str(tmp_path / "ws"), "name": "tiny", **overrides}
  return config_lib.resolve(config_lib.Config(**values))


def tiny_flags(**overrides) -> list[str]:
  from nkd.config import as_flag  # pylint: disable=g-import-not-at-top

  return [as_flag(k, v) for k, v in {**TINY, **overrides}.items()]


def run_module(module: str, args, *, env=None, timeout=600, check=False, cwd=REPO):
  """Runs `python -m MODULE ARGS` in a fresh process (from the repository root)."""
  full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
  proc = subprocess.run(
      [sys.executable, "-m", module, *map(str, args)],
      cwd=cwd,
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  if check and proc.returncode:
    raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def session_folder(tmp_path_factory) -> Path:
  """This test session's folder above every test process's own (pytest-xdist), or this
  process's base folder where there is one process."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_TESTRUNUID") else base


# Set by conftest.py for the session: where trained_tiny keeps its models for the other test
# processes (None: each process trains its own).
SHARED_FOLDER: Path | None = None


def build_once(path: Path, build) -> Path:
  """`build(path)` once per session, whichever test process asks first; under pytest-xdist the
  others wait for it (a file lock beside it)."""
  import fcntl  # pylint: disable=g-import-not-at-top

  done = path.with_name(path.name + ".done")
  with open(path.with_name(path.name + ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      build(path)
      done.touch()
  return path


def once_per_session(tmp_path_factory, name: str, build) -> Path:
  """A folder that `build(folder)` fills once per test session, whichever test process asks
  first; under pytest-xdist the other workers wait for it (a module- or session-scoped fixture
  is otherwise built once in each worker that runs one of its tests)."""

  def make(folder):
    folder.mkdir(exist_ok=True)
    build(folder)

  return build_once(session_folder(tmp_path_factory) / name, make)


def run_cli(args, **kwargs):
  """Runs `python -m nkd.main ARGS` in a fresh process."""
  return run_module("nkd.main", args, **kwargs)


def assert_one_line_error(proc, *fragments) -> str:
  """The command-line contract for bad input: exit 2, one `nkd: error:` line naming what is
  wrong, no traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stdout + proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("nkd: error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def mesh_of(k: int):
  """A 'data' mesh over the first k devices (conftest gives each test process 4 CPU ones)."""
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  if len(devices) < k:
    raise AssertionError(f"{k} devices asked for, {len(devices)} present")
  return Mesh(np.asarray(devices[:k]), ("data",))


def parse_flags(args):
  """A Config from command-line flags, as nkd.main builds it, in this process."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from nkd import config as config_lib  # pylint: disable=g-import-not-at-top

  flag_values = flags.FlagValues()
  config_lib.define_flags(flag_values)
  argv = ["nkd", *args]
  flag_values(argv)
  return config_lib.from_flags(flag_values, argv)


COLOURS = np.array([[0.55, 0.45, 0.45], [0.45, 0.55, 0.45], [0.45, 0.45, 0.55]])


def colour_images(rng: np.random.Generator, n: int, num_classes: int = 3, noise: float = 0.08):
  """Constant-colour images (one colour per class, 3 classes) plus pixel noise; uint8 NHWC."""
  labels = np.arange(n) % num_classes
  images = COLOURS[labels % len(COLOURS)][:, None, None, :] + rng.normal(0, noise, (n, 32, 32, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class TinyModel:
  model: Any
  variables: Any
  test_images: np.ndarray  # uint8 NHWC
  test_labels: np.ndarray  # int32

  @property
  def apply_fn(self):
    return eval_apply_fn(self.model)

  @property
  def test_unit(self) -> np.ndarray:
    return self.test_images.astype(np.float32) / 255.0


@functools.lru_cache(maxsize=None)
def trained_tiny(
    steps: int = 40, input_noise_sigma: float = 0.0, num_test: int = 40, seed: int = 0
) -> TinyModel:
  """A WRN-10-1 trained for `steps` SGD steps (batch 32) on 3-class colour images, optionally
  with Gaussian input noise (Soft Randomization's student alone). Cached per process, and
  trained once per session where conftest.py gives SHARED_FOLDER (the test set is drawn here:
  its size does not change the training)."""
  rng = np.random.default_rng(seed)
  train_x, train_y = colour_images(rng, 32 * steps)
  test_x, test_y = colour_images(rng, num_test)
  model = create_model("wrn-10-1", num_classes=3)
  variables = init_variables(model, jax.random.key(seed))
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state, x, y, key):
    x = x.astype(jnp.float32) / 255
    if input_noise_sigma:
      x = x + input_noise_sigma * jax.random.normal(key, x.shape)

    def loss_fn(p):
      logits, updates = model.apply(
          {"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    delta, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, delta), updates["batch_stats"], opt_state

  def train():
    params, batch_stats, state = variables["params"], variables["batch_stats"], opt_state
    for i in range(steps):
      params, batch_stats, state = step(
          params,
          batch_stats,
          state,
          train_x[i * 32 : (i + 1) * 32],
          train_y[i * 32 : (i + 1) * 32],
          jax.random.key(1000 + i),
      )
    return {"params": params, "batch_stats": batch_stats}

  if SHARED_FOLDER is None:
    trained = train()
  else:  # trained once per session; the other test processes read its bytes
    path = SHARED_FOLDER / f"trained_tiny-{steps}-{input_noise_sigma}-{seed}.msgpack"
    build_once(path, lambda p: p.write_bytes(flax.serialization.to_bytes(train())))
    restored = flax.serialization.from_bytes(variables, path.read_bytes())
    trained = jax.tree_util.tree_map(jnp.asarray, restored)
  return TinyModel(model, trained, test_x, test_y)
