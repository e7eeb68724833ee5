"""Noise sources inside training: all-off is plain Hinton KD bit for bit, the Fickle teacher
varies with its key while its BatchNorm statistics stay frozen, label corruption per epoch."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd import losses
from nkd.data.augment import crop_and_flip
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd.keys import step_key_for as noise_key
from nkd import keys as keys_lib
from nkd.training.loop import epoch_training_labels
from nkd.training.state import create_train_state, make_optimizer
from nkd.training.steps import StepSpec, make_train_step, replicate, teacher_forward

from helpers import FUSION_EMITTERS_FLAG, TEST_COMPILE_SETTINGS, mesh_of, tiny_config

N, B = 64, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config = tiny_config(
      tmp_path_factory.mktemp("ws"), mode="kd", teacher_workdir="unused", batch_size=B
  )
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, N).astype(np.int32)
  student = create_model("wrn-10-1")
  teacher = create_model("wrn-10-1", dropout_rate=0.3)
  mesh = mesh_of(1)  # bit-for-bit comparisons with unsharded references
  state = create_train_state(student, jax.random.key(0), make_optimizer(config, N // B))
  teacher_vars = init_variables(teacher, jax.random.key(1))
  return config, mesh, student, teacher, state, teacher_vars, images, labels


def _plain_hinton_step(student, teacher, spec):
  """Hinton KD written out directly, as the reference."""

  def step(state, teacher_variables, images, labels, order, train_key):
    idx = jax.lax.dynamic_slice_in_dim(order, (state.step % spec.steps_per_epoch) * B, B)
    x, y = jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)
    step_key = jax.random.fold_in(train_key, state.step)
    x = crop_and_flip(noise_key(step_key, "augment"), x).astype(jnp.float32) / 255.0
    t = jax.lax.stop_gradient(teacher.apply(teacher_variables, x, train=False))

    def loss_fn(params):
      logits, upd = student.apply(
          {"params": params, "batch_stats": state.batch_stats},
          x,
          train=True,
          deterministic=False,
          rngs={"dropout": noise_key(step_key, "dropout")},
          mutable=["batch_stats"],
      )
      return losses.hinton_kd_loss(logits, t, y, alpha=spec.alpha, tau=spec.tau), upd

    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=upd["batch_stats"]), loss

  return jax.jit(step)


def _order_and_train_key():
  """The epoch order and the train key of seed 0, the step's last two inputs."""
  keys = keys_lib.run_keys(0)
  return keys_lib.epoch_permutation(keys["data"], 0, N), keys["train"]


def _run(step, state, teacher_vars, images, labels, n=2):
  order, train_key = _order_and_train_key()
  for _ in range(n):
    state, _ = step(state, teacher_vars, images, labels, order, train_key)
  return jax.device_get((state.params, state.batch_stats))


def _fresh(mesh, *trees):
  """Copies placed on the mesh: the step donates its state, so fixtures must not be passed."""
  return replicate(jax.tree.map(jnp.array, trees), mesh)


def _with_nkds_emitters(step, *args):
  """`step` compiled for `args` with XLA:CPU's fusion emitters, the code generator nkd's runs
  use (the test processes compile with the older one: helpers.TEST_COMPILE_SETTINGS). With the
  older one the two programs here, which fuse differently, round apart (the final BatchNorm's
  bias, 43 of 64 elements, at -O0); with the emitters they agree bit for bit."""
  if TEST_COMPILE_SETTINGS.get(FUSION_EMITTERS_FLAG) != "false":
    return step
  return step.lower(*args, *_order_and_train_key()).compile(
      compiler_options={FUSION_EMITTERS_FLAG.lstrip("-"): True}
  )


def test_all_noise_off_is_plain_hinton_kd_bitwise(setup):
  config, mesh, student, teacher, state, teacher_vars, images, labels = setup
  spec = StepSpec.from_config(config, N // B)
  args = _fresh(mesh, state, teacher_vars, images, labels)
  ours = _run(_with_nkds_emitters(make_train_step(student, spec, mesh, teacher), *args), *args)
  reference_args = (state, teacher_vars, images, labels)
  reference = _run(
      _with_nkds_emitters(_plain_hinton_step(student, teacher, spec), *reference_args),
      *reference_args,
  )
  chex.assert_trees_all_equal(ours, reference)


def _with_noise(spec: StepSpec, **changes) -> StepSpec:
  """The step with some noise options changed (the step takes the NoiseOptions as they are)."""
  return dataclasses.replace(spec, noise=dataclasses.replace(spec.noise, **changes))


@pytest.mark.parametrize(
    "change",
    [
        {"input_noise_sigma": 0.1},
        {"logit_noise_sigma": 0.2},
        {"fickle_teacher": True},
        {"swap_p": 1.0, "swap_threshold": 1.0},
        {"teacher_bn_mode": "batch"},
    ],
)
def test_each_noise_source_changes_the_step(setup, change):
  config, mesh, student, teacher, state, teacher_vars, images, labels = setup
  base = StepSpec.from_config(config, N // B)
  plain = _run(
      make_train_step(student, base, mesh, teacher),
      *_fresh(mesh, state, teacher_vars, images, labels),
      n=1,
  )
  args = _fresh(mesh, state, teacher_vars, images, labels)
  noisy = _run(make_train_step(student, _with_noise(base, **change), mesh, teacher), *args, n=1)
  assert not np.array_equal(jax.tree.leaves(plain[0])[0], jax.tree.leaves(noisy[0])[0])


def test_fickle_teacher_varies_with_the_key_and_keeps_batchnorm_frozen(setup):
  config, _, _, teacher, _, teacher_vars, images, _ = setup
  spec = _with_noise(StepSpec.from_config(config, N // B), fickle_teacher=True)
  x = jnp.asarray(images[:8], jnp.float32) / 255
  a = teacher_forward(teacher, teacher_vars, x, spec, jax.random.key(1))
  b = teacher_forward(teacher, teacher_vars, x, spec, jax.random.key(2))
  assert not np.allclose(a, b)
  chex.assert_trees_all_equal(a, teacher_forward(teacher, teacher_vars, x, spec, jax.random.key(1)))
  # The frozen teacher's eval-mode statistics give the BatchNorm output: with dropout off the
  # Fickle forward equals the plain eval forward.
  eval_spec = _with_noise(spec, fickle_teacher=False)
  chex.assert_trees_all_equal(
      teacher_forward(teacher, teacher_vars, x, eval_spec, jax.random.key(1)),
      teacher.apply(teacher_vars, x, train=False, deterministic=True),
  )


def test_label_corruption_is_redrawn_per_epoch_or_fixed(setup, tmp_path):
  _, mesh, *_ = setup
  labels = replicate(jnp.asarray(np.arange(4000) % 10, jnp.int32), mesh)
  key = keys_lib.run_keys(0)["label_noise"]
  config = tiny_config(tmp_path, label_noise_p=0.25)
  e0, e1 = (np.asarray(epoch_training_labels(config, key, labels, e, 10, mesh)) for e in (0, 1))
  assert not np.array_equal(e0, e1)
  assert abs(np.mean(e0 != np.asarray(labels)) - 0.25) < 0.03
  fixed = tiny_config(tmp_path, label_noise_p=0.25, label_noise_fixed=True)
  f0, f1 = (np.asarray(epoch_training_labels(fixed, key, labels, e, 10, mesh)) for e in (0, 1))
  np.testing.assert_array_equal(f0, f1)
  # A distilling student with mode T keeps clean labels (the teacher was corrupted).
  teacher_mode = tiny_config(
      tmp_path, mode="kd", teacher_workdir="x", label_noise_p=0.25, label_noise_mode="T"
  )
  assert epoch_training_labels(teacher_mode, key, labels, 0, 10, mesh) is labels
