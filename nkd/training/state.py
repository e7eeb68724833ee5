"""Train state, optimiser and learning-rate schedule."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
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


def _step_and_optimizer_state(tx: optax.GradientTransformation, params):
  # A strongly typed step: a weakly typed 0 would make the second step compile again.
  return jnp.zeros((), jnp.int32), tx.init(params)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _optimizer_init(tx: optax.GradientTransformation):
  return jax.jit(functools.partial(_step_and_optimizer_state, tx))


def _constant_state(tx: optax.GradientTransformation, params):
  """The step and `tx`'s initial state as numpy arrays where every leaf is a constant that
  does not depend on the parameters' values (nkd's SGD: zeros for the step, the schedule's
  count and the momentum trace), else None. Read off `tx.init`'s jaxpr: a literal, or a
  literal broadcast to a shape, is made on the host; a compiled program for those zeros costs
  0.2-0.4 s of compiling per model on a 2-vCPU CPU (BENCHMARKS.md)."""
  shapes = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  recipe = _constant_state_recipe(tx, treedef, tuple(leaves))
  if recipe is None:
    return None
  out_treedef, constants = recipe
  return jax.tree_util.tree_unflatten(
      out_treedef, [np.full(shape, value, dtype) for shape, dtype, value in constants]
  )


@functools.lru_cache(maxsize=MEMO_SIZE)
def _constant_state_recipe(tx, treedef, leaves):
  """(the state's tree structure, [(shape, dtype, value)] per leaf), or None; traced once per
  optimiser and parameter shapes (a second run in the process traces nothing)."""
  closed, shapes = jax.make_jaxpr(
      functools.partial(_step_and_optimizer_state, tx), return_shape=True
  )(jax.tree_util.tree_unflatten(treedef, leaves))
  made = {}
  for eqn in closed.jaxpr.eqns:
    (operand,) = eqn.invars if len(eqn.invars) == 1 else (None,)
    if eqn.primitive.name != "broadcast_in_dim" or not isinstance(operand, jax_core.Literal):
      return None
    (out,) = eqn.outvars
    made[out] = (out.aval.shape, out.aval.dtype, operand.val)
  constants = []
  for var in closed.jaxpr.outvars:
    if isinstance(var, jax_core.Literal):
      constants.append(((), var.aval.dtype, var.val))
    elif var in made:
      constants.append(made[var])
    else:  # an input passed through, or a constant of the jaxpr
      return None
  return jax.tree_util.tree_structure(shapes), tuple(constants)


def create_train_state(model: nn.Module, key: jax.Array, tx) -> TrainState:
  """The initial state (TrainState.create's). The optimiser's state is made on the host where
  it is constants (`_constant_state`), else by one compiled program: eagerly, each parameter
  shape's zeros would be a program of its own."""
  variables = init_variables(model, key)
  params = variables["params"]
  state = _constant_state(tx, params)
  step, opt_state = state if state is not None else _optimizer_init(tx)(params)
  return TrainState(
      step=step,
      apply_fn=model.apply,
      params=params,
      tx=tx,
      opt_state=opt_state,
      batch_stats=variables["batch_stats"],
  )
