"""Train state, optimiser and learning-rate schedule."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from nkd.models.wrn import MEMO_SIZE, init_variables


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the learning-rate schedule's values. The
  teacher is passed in, never stored here.

  `tx` is an `SGD`: the optimiser's structure only (schedule kind, weight decay, momentum).
  The schedule's numbers (learning rate, decay steps, milestones) are `schedule`, arrays the
  train step takes as inputs: runs that differ only in them (epochs, learning rate, milestone
  epochs) share one compiled step; the training set's size stays a shape of the step. They are
  made from the config, never checkpointed."""

  batch_stats: Any = None
  schedule: Any = None

  def apply_gradients(self, *, grads, **kwargs):
    """TrainState.apply_gradients with the optimiser of `self.schedule`'s values."""
    updates, opt_state = self.tx.transformation(self.schedule).update(
        grads, self.opt_state, self.params
    )
    return self.replace(
        step=self.step + 1,
        params=optax.apply_updates(self.params, updates),
        opt_state=opt_state,
        **kwargs,
    )


def cosine_lr(count, values):
  """optax.cosine_decay_schedule(lr, total)(count) with `lr` and `total` arrays instead of
  constants, bit for bit as XLA computes optax's formula in a train step: there the division
  of `pi * count` by the constant `total` becomes a multiplication by `1 / total`, and the two
  constants fold into one, `pi * (1 / total)` in float32 (`values["pi_over_total"]`, made on the
  host the same way). A plain division by a traced `total` differs in the last bit at 14 of the
  demo's 96 steps; this form matched optax's compiled schedule at every step of six totals
  (16 to 78,000; jaxlib 0.10.2 on CPU; tests/test_train_step.py checks it)."""
  count = jnp.minimum(count, values["total"])
  cosine_decay = 0.5 * (1 + jnp.cos(count * values["pi_over_total"]))
  return values["lr"] * cosine_decay


def step_lr(count, values):
  """optax.piecewise_constant_schedule(lr, {boundary: scale})(count), its operations one for
  one, with the boundaries (sorted) and scales arrays instead of constants: the same bits."""
  v = values["lr"]
  for i in range(values["boundaries"].shape[0]):
    indicator = jnp.maximum(0.0, jnp.sign(values["boundaries"][i] - count))
    v = v * indicator + (1 - indicator) * values["scales"][i] * v
  return v


_LR = {"cosine": cosine_lr, "step": step_lr}


@dataclasses.dataclass(frozen=True)
class SGD:
  """SGD with momentum, weight decay added to the gradient before momentum (as in PyTorch),
  and a learning rate of schedule `kind` whose values come with each update. Hashable and
  value-free: equal structures are one compiled train step."""

  kind: str  # 'cosine' or 'step'
  weight_decay: float
  momentum: float
  nesterov: bool

  def transformation(self, values=None) -> optax.GradientTransformation:
    """The optax chain; `values` (traced or not) give the learning rate. Without them the
    chain only initialises (its state does not depend on the schedule)."""
    lr = _LR[self.kind]
    schedule = (lambda count: lr(count, values)) if values is not None else _no_schedule
    return optax.chain(
        optax.add_decayed_weights(self.weight_decay),
        optax.sgd(schedule, momentum=self.momentum, nesterov=self.nesterov),
    )

  def init(self, params):
    return self.transformation().init(params)

  def update(self, *args, **kwargs):
    raise TypeError("nkd's SGD updates through TrainState.apply_gradients (it needs the schedule)")


def _no_schedule(count):
  raise TypeError(f"no learning-rate schedule values (step {count})")


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """What make_optimizer returns: the optimiser's structure and its schedule's values."""

  sgd: SGD
  schedule: dict[str, np.ndarray]

  def learning_rate(self, step) -> float:
    """The learning rate of `step` (0-based), as the train step computes it."""
    return float(_jitted_lr(self.sgd.kind)(jnp.asarray(step, jnp.int32), self.schedule))


def schedule_values(config, steps_per_epoch: int) -> dict[str, np.ndarray]:
  """The numbers of the run's learning-rate schedule, as arrays."""
  lr = np.asarray(config.lr, np.float32)
  if config.lr_schedule == "cosine":  # optax's cosine schedule takes its steps as a float
    total = np.asarray(config.epochs * steps_per_epoch, np.float32)
    pi_over_total = np.asarray(np.float32(np.pi) * (np.float32(1) / total))
    return {"lr": lr, "total": total, "pi_over_total": pi_over_total}
  boundaries = sorted({m * steps_per_epoch for m in config.lr_milestones if m < config.epochs})
  return {
      "lr": lr,
      "boundaries": np.asarray(boundaries, np.int32),
      "scales": np.full(len(boundaries), config.lr_decay, np.float32),
  }


@functools.lru_cache(maxsize=None)
def _jitted_lr(kind: str):
  """One compiled program per schedule kind (and number of milestones), for any values."""
  return jax.jit(_LR[kind])


def make_optimizer(config, steps_per_epoch: int) -> Optimizer:
  """SGD with momentum; weight decay added to the gradient before momentum, as in PyTorch.
  Its structure (`.sgd`) is part of a train state's and so of the compiled train step; the
  schedule's values (`.schedule`) are inputs of the step."""
  sgd = SGD(config.lr_schedule, config.weight_decay, config.momentum, config.nesterov)
  return Optimizer(sgd, schedule_values(config, steps_per_epoch))


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


def learning_rate_schedule(config, steps_per_epoch: int) -> Callable[[int], float]:
  """The run's learning rate by step (0-based), computed as the train step computes it."""
  return make_optimizer(config, steps_per_epoch).learning_rate


def create_train_state(model: nn.Module, key: jax.Array, tx: Optimizer) -> TrainState:
  """The initial state (TrainState.create's). The optimiser's state is made on the host where
  it is constants (`_constant_state`), else by one compiled program: eagerly, each parameter
  shape's zeros would be a program of its own."""
  variables = init_variables(model, key)
  params = variables["params"]
  state = _constant_state(tx.sgd, params)
  step, opt_state = state if state is not None else _optimizer_init(tx.sgd)(params)
  return TrainState(
      step=step,
      apply_fn=model.apply,
      params=params,
      tx=tx.sgd,
      opt_state=opt_state,
      batch_stats=variables["batch_stats"],
      schedule=tx.schedule,
  )
