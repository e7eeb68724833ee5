"""Train state, optimiser and learning-rate schedule."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from nkd.models.wrn import MEMO_SIZE, init_variables


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics. The teacher is passed in, never stored here."""

  batch_stats: Any = None


def _schedule_options(config, steps_per_epoch: int) -> tuple:
  return (
      config.lr_schedule,
      config.lr,
      config.epochs,
      tuple(config.lr_milestones),
      config.lr_decay,
      steps_per_epoch,
  )


@functools.lru_cache(maxsize=MEMO_SIZE, typed=True)
def _schedule(kind, lr, epochs, milestones, decay, steps_per_epoch) -> optax.Schedule:
  total = epochs * steps_per_epoch
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, total)
  boundaries = {m * steps_per_epoch: decay for m in milestones if m < epochs}
  return optax.piecewise_constant_schedule(lr, boundaries)


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """The run's schedule: one function object per set of options (see wrn.MEMO_SIZE)."""
  return _schedule(*_schedule_options(config, steps_per_epoch))


@functools.lru_cache(maxsize=MEMO_SIZE)
def jitted_schedule(schedule: optax.Schedule):
  """`schedule` as one compiled program (its eager ops would be several), built once."""
  return jax.jit(schedule)


@functools.lru_cache(maxsize=MEMO_SIZE, typed=True)
def _optimizer(schedule_options, weight_decay, momentum, nesterov) -> optax.GradientTransformation:
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(_schedule(*schedule_options), momentum=momentum, nesterov=nesterov),
  )


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum; weight decay added to the gradient before momentum, as in PyTorch.
  One object per set of options: it is part of a train state's structure, so equal options
  share the compiled train step."""
  return _optimizer(
      _schedule_options(config, steps_per_epoch),
      config.weight_decay,
      config.momentum,
      config.nesterov,
  )


@functools.lru_cache(maxsize=MEMO_SIZE)
def _optimizer_init(tx: optax.GradientTransformation):
  # A strongly typed step: a weakly typed 0 would make the second step compile again.
  return jax.jit(lambda p: (jnp.zeros((), jnp.int32), tx.init(p)))


def create_train_state(model: nn.Module, key: jax.Array, tx) -> TrainState:
  """The initial state (TrainState.create's) with the optimiser state made by one compiled
  program: eagerly, each parameter shape's zeros would be a program of its own."""
  variables = init_variables(model, key)
  params = variables["params"]
  step, opt_state = _optimizer_init(tx)(params)
  return TrainState(
      step=step,
      apply_fn=model.apply,
      params=params,
      tx=tx,
      opt_state=opt_state,
      batch_stats=variables["batch_stats"],
  )
