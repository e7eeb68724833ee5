import chex
import jax
import numpy as np
import optax
import pytest

from nkd.data import load_dataset
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd import keys as keys_lib
from nkd.training.state import create_train_state, learning_rate_schedule, make_optimizer
from nkd.training.steps import StepSpec, jit_train_step, make_train_step, replicate

from helpers import mesh_of, tiny_config


@pytest.mark.parametrize("mode", ["ce", "kd"])
def test_train_step_compiles_once_and_changes_parameters(tmp_path, mode):
  config = tiny_config(tmp_path, mode=mode, teacher_workdir="x" if mode == "kd" else "")
  data = load_dataset(config)
  steps_per_epoch = len(data.train_images) // config.batch_size
  model = create_model(config.model)
  state = create_train_state(model, jax.random.key(0), make_optimizer(config, steps_per_epoch))
  teacher = create_model("wrn-10-2") if mode == "kd" else None
  teacher_vars = init_variables(teacher, jax.random.key(1)) if teacher else None
  mesh = mesh_of(1)  # bit-for-bit comparisons with unsharded references
  chex.clear_trace_counter()  # The counter is keyed by the function's code, shared by params.
  step = make_train_step(
      model, StepSpec.from_config(config, steps_per_epoch), mesh, teacher, jit=False
  )
  step = jit_train_step(chex.assert_max_traces(step, n=1), mesh)
  keys = keys_lib.run_keys(0)
  order = keys_lib.epoch_permutation(keys["data"], 0, len(data.train_images))
  state, teacher_vars = replicate((state, teacher_vars), mesh)
  before = jax.device_get(state.params)
  for _ in range(3):
    state, metrics = step(
        state, teacher_vars, data.train_images, data.train_labels, order, keys["train"]
    )
  assert int(state.step) == 3
  assert np.isfinite(float(metrics["loss"]))
  changed = jax.tree.map(
      lambda a, b: not np.array_equal(a, b), before, jax.device_get(state.params)
  )
  assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize(
    "kind,epochs,steps_per_epoch,lr",
    [("cosine", 3, 32, 0.1), ("cosine", 1, 7, 0.05), ("cosine", 200, 390, 0.1)]
    + [("step", 10, 5, 0.1), ("step", 200, 390, 0.1)],
)
def test_schedule_is_optaxs_bit_for_bit_at_every_step(tmp_path, kind, epochs, steps_per_epoch, lr):
  """The train step's learning rate (its numbers inputs, not constants) is what optax's
  schedule with those numbers as constants gives in a compiled program, to the bit."""
  config = tiny_config(
      tmp_path, lr_schedule=kind, epochs=epochs, lr=lr, lr_milestones=(3, 6, 60, 120, 160)
  )
  total = epochs * steps_per_epoch
  if kind == "cosine":
    reference = optax.cosine_decay_schedule(lr, total)
  else:
    milestones = [m for m in config.lr_milestones if m < epochs]
    reference = optax.piecewise_constant_schedule(
        lr, {m * steps_per_epoch: config.lr_decay for m in milestones}
    )
  reference = jax.jit(reference)
  ours = learning_rate_schedule(config, steps_per_epoch)
  counts = range(0, total + 2, max(1, total // 500))
  want = np.array([np.asarray(reference(np.int32(c))) for c in counts], np.float32)
  got = np.array([ours(c) for c in counts], np.float32)
  np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_step_schedule_drops_by_lr_decay_at_milestones(tmp_path):
  config = tiny_config(tmp_path, lr_schedule="step", epochs=10, lr_milestones=(3, 6), lr_decay=0.2)
  schedule = learning_rate_schedule(config, steps_per_epoch=5)
  np.testing.assert_allclose(
      [schedule(0), schedule(14), schedule(15), schedule(30)], [0.1, 0.1, 0.02, 0.004], rtol=1e-6
  )


def test_epoch_order_is_a_permutation_that_changes_each_epoch():
  key = keys_lib.run_keys(0)["data"]
  a, b = (np.asarray(keys_lib.epoch_permutation(key, e, 100)) for e in (0, 1))
  assert sorted(a) == list(range(100)) and not np.array_equal(a, b)
  np.testing.assert_array_equal(a, keys_lib.epoch_permutation(key, 0, 100))


def test_a_second_equal_run_in_one_process_traces_nothing(tmp_path):
  """The programs of a run (model, initialisation, optimiser, schedule, train step, evaluation)
  are built once per description in a process: the next seed of the same run, with other epochs
  and learning rate too, reuses them all."""
  import jax.monitoring  # pylint: disable=import-outside-toplevel

  from nkd import pipeline  # pylint: disable=import-outside-toplevel

  traces = []

  def count(event, duration, **kwargs):  # pylint: disable=unused-argument
    if event == "/jax/core/compile/jaxpr_trace_duration":
      traces.append(duration)

  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    counts = []
    # The second run: another seed, and other epochs and learning rate (the schedule's numbers
    # are inputs of the train step, not constants of its program).
    for seed, epochs, lr in ((0, 1, 0.1), (1, 2, 0.05)):
      config = tiny_config(  # Shapes of this test's own, so its first run traces.
          tmp_path,
          seed=seed,
          workdir=str(tmp_path / f"seed_{seed}"),
          synthetic_train_size=48,
          batch_size=12,
          epochs=epochs,
          lr=lr,
      )
      before = len(traces)
      pipeline.train_and_evaluate(config, load_dataset(config))
      counts.append(len(traces) - before)
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert counts[0] > 0 and counts[1] == 0, counts


def test_the_optimiser_state_is_made_on_the_host_with_the_compiled_programs_values(tmp_path):
  """nkd's SGD starts from constants (the step, the schedule's count, the momentum trace):
  create_train_state makes them on the host (no program to compile); they must be what
  `tx.init` compiled gives, leaf for leaf, shape, dtype and value. A state that depends on the
  parameters falls back to the compiled program."""
  from nkd.training import state as state_lib  # pylint: disable=import-outside-toplevel

  config = tiny_config(tmp_path)
  tx = make_optimizer(config, steps_per_epoch=4).sgd
  params = init_variables(create_model(config.model), jax.random.key(0))["params"]
  host = state_lib._constant_state(tx, params)  # pylint: disable=protected-access
  compiled = state_lib._optimizer_init(tx)(params)  # pylint: disable=protected-access
  assert host is not None
  chex.assert_trees_all_equal_structs(host, compiled)
  for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(compiled)):
    assert isinstance(a, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a, np.asarray(b))
  averaged = optax.GradientTransformation(
      lambda p: jax.tree_util.tree_map(lambda x: 0.5 * x, p), lambda u, s, p=None: (u, s)
  )
  assert state_lib._constant_state(averaged, params) is None  # pylint: disable=protected-access
