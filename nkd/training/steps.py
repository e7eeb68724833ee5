"""Jitted train and evaluation steps.

The train step is a pure function of (state, teacher variables, data, epoch order, train key):
it slices its batch out of the device-resident training set by `state.step`, derives its key as
`fold_in(train_key, step)` and each purpose's key from that by a stable tag, so a resumed run
needs nothing but the step. With a mesh of several devices the batch is sharded over the 'data'
axis and parameters are replicated; BatchNorm statistics are then computed over the global
batch (XLA inserts the cross-device reductions), exactly as on one device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nkd import losses, noise
from nkd.config.noise import NoiseOptions
from nkd.data.augment import crop_and_flip, to_unit_float
from nkd.keys import step_key_for
from nkd.models import conv
from nkd.models.wrn import MEMO_SIZE


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The static description of a train step (hashable, so a change recompiles).

  `noise` is the run's NoiseOptions as it is. With every noise level at 0 the step runs exactly
  the operations of plain Hinton KD (or plain cross-entropy): each source is switched on by a
  Python-level branch, never multiplied by 0.
  """

  mode: str  # 'ce' or 'kd'
  batch_size: int
  steps_per_epoch: int
  augment: bool = True
  alpha: float = 0.9
  tau: float = 4.0
  noise: NoiseOptions = NoiseOptions()

  @classmethod
  def from_config(cls, config, steps_per_epoch: int) -> "StepSpec":
    return cls(
        mode=config.mode,
        batch_size=config.batch_size,
        steps_per_epoch=steps_per_epoch,
        augment=config.augment,
        alpha=config.alpha,
        tau=config.tau,
        noise=config.noise,
    )


def teacher_forward(teacher_model: nn.Module, variables, x, spec: StepSpec, key):
  """Frozen teacher logits: dropout on for the Fickle teacher, BatchNorm mode by its own
  switch; running statistics are never updated."""
  options = spec.noise
  kwargs = {
      "train": options.teacher_bn_mode == "batch",
      "deterministic": not options.fickle_teacher,
  }
  if options.fickle_teacher:
    kwargs["rngs"] = {"dropout": key}
  if options.teacher_bn_mode == "batch":
    logits, _ = teacher_model.apply(variables, x, mutable=["batch_stats"], **kwargs)
  else:
    logits = teacher_model.apply(variables, x, **kwargs)
  return jax.lax.stop_gradient(logits)


def distillation_loss(student_logits, teacher_logits, labels, spec: StepSpec, step_key):
  """Hinton KD with the teacher-side noise sources of `spec` applied to the teacher's outputs."""
  options = spec.noise
  if not (options.logit_noise_sigma or options.swap_p):
    return losses.hinton_kd_loss(
        student_logits, teacher_logits, labels, alpha=spec.alpha, tau=spec.tau
    )
  noisy = noise.signal_noise(
      step_key_for(step_key, "signal_noise"),
      teacher_logits,
      sigma=options.logit_noise_sigma,
      per_sample=options.logit_noise_per_sample,
  )
  tempered = noisy / spec.tau
  teacher_log_probs = jax.nn.log_softmax(tempered.astype(jnp.float32))
  if options.swap_p:
    probs = noise.swap_probs(
        step_key_for(step_key, "swap"),
        jnp.exp(teacher_log_probs),
        p=options.swap_p,
        threshold=options.swap_threshold,
        mode=options.swap_mode,
    )
    teacher_log_probs = jnp.log(probs)
  kd = losses.kd_divergence_from_log_probs(student_logits, teacher_log_probs, tau=spec.tau)
  return (1 - spec.alpha) * losses.cross_entropy(student_logits, labels) + spec.alpha * kd


def make_train_step(
    model: nn.Module,
    spec: StepSpec,
    mesh: Mesh,
    teacher_model: nn.Module | None = None,
    *,
    jit: bool = True,
) -> Callable:
  """Returns `train_step(state, teacher_vars, images, labels, order, train_key)`, jitted with
  `jit_train_step` unless `jit=False`. `labels` are the epoch's (possibly corrupted) labels.
  The jitted step is built once per (model, spec, mesh, teacher model) in a process (see
  wrn.MEMO_SIZE): an equal run reuses its compiled program."""
  if spec.mode == "kd" and teacher_model is None:
    raise ValueError("mode 'kd' needs a teacher model")
  if not jit:
    return _train_step(model, spec, mesh, teacher_model)
  return _jitted_train_step(model, spec, mesh, teacher_model)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _jitted_train_step(model, spec, mesh, teacher_model):
  return jit_train_step(_train_step(model, spec, mesh, teacher_model), mesh)


def _train_step(model: nn.Module, spec: StepSpec, mesh: Mesh, teacher_model) -> Callable:
  batch_sharding = NamedSharding(mesh, P("data"))

  def train_step(state, teacher_variables, images, labels, order, train_key):
    step = state.step
    start = (step % spec.steps_per_epoch) * spec.batch_size
    idx = jax.lax.dynamic_slice_in_dim(order, start, spec.batch_size)
    x = jax.lax.with_sharding_constraint(jnp.take(images, idx, axis=0), batch_sharding)
    y = jax.lax.with_sharding_constraint(jnp.take(labels, idx, axis=0), batch_sharding)
    step_key = jax.random.fold_in(train_key, step)
    if spec.augment:
      x = crop_and_flip(step_key_for(step_key, "augment"), x)
    x = to_unit_float(x)
    # Soft Randomization: only the student sees the noisy image.
    student_x = noise.gaussian_input_noise(
        step_key_for(step_key, "input_noise"),
        x,
        sigma=spec.noise.input_noise_sigma,
        clip=spec.noise.input_noise_clip,
    )
    teacher_logits = None
    if spec.mode == "kd":
      teacher_logits = teacher_forward(
          teacher_model, teacher_variables, x, spec, step_key_for(step_key, "teacher_dropout")
      )

    def loss_fn(params):
      logits, updates = state.apply_fn(
          {"params": params, "batch_stats": state.batch_stats},
          student_x,
          train=True,
          deterministic=False,
          rngs={"dropout": step_key_for(step_key, "dropout")},
          mutable=["batch_stats"],
      )
      if spec.mode == "kd":
        loss = distillation_loss(logits, teacher_logits, y, spec, step_key)
      else:
        loss = losses.cross_entropy(logits, y)
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {"loss": loss, "correct": jnp.sum(jnp.argmax(logits, -1) == y)}
    return state, metrics

  def sharded_train_step(*args):
    with conv.batch_sharded(mesh):  # nkd's CPU convolution kernels on each device's rows
      return train_step(*args)

  return sharded_train_step


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of `mesh` (what the train step expects of its inputs)."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def jit_train_step(train_step: Callable, mesh: Mesh) -> Callable:
  """Jits a train step over `mesh`, donating the state."""
  # Everything but the batch inside the step is replicated; fixing the shardings of inputs and
  # outputs alike keeps the second call from compiling again.
  replicated = NamedSharding(mesh, P())
  return jax.jit(train_step, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)
