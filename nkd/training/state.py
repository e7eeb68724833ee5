"""Train state, optimiser and learning-rate schedule."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from nkd.models.wrn import init_variables


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics. The teacher is passed in, never stored here."""

  batch_stats: Any = None


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  total = config.epochs * steps_per_epoch
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.lr, total)
  boundaries = {
      m * steps_per_epoch: config.lr_decay for m in config.lr_milestones if m < config.epochs
  }
  return optax.piecewise_constant_schedule(config.lr, boundaries)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum; weight decay added to the gradient before momentum, as in PyTorch."""
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(
          learning_rate_schedule(config, steps_per_epoch),
          momentum=config.momentum,
          nesterov=config.nesterov,
      ),
  )


def create_train_state(model: nn.Module, key: jax.Array, tx) -> TrainState:
  """The initial state (TrainState.create's) with the optimiser state made by one compiled
  program: eagerly, each parameter shape's zeros would be a program of its own."""
  variables = init_variables(model, key)
  params = variables["params"]
  # A strongly typed step: a weakly typed 0 would make the second step compile again.
  step, opt_state = jax.jit(lambda p: (jnp.zeros((), jnp.int32), tx.init(p)))(params)
  return TrainState(
      step=step,
      apply_fn=model.apply,
      params=params,
      tx=tx,
      opt_state=opt_state,
      batch_stats=variables["batch_stats"],
  )
