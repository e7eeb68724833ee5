"""The sharded train step on 2 and 4 (fake CPU) devices matches the one-device step.

conftest.py gives every test process 4 CPU devices. Meshes of 1, 2 and 4 devices are built
from jax.devices()[:k] (helpers.mesh_of) and fed
to the core's own make_train_step / replicate: the batch is sharded on 'data', parameters are
replicated, and BatchNorm sees the global batch, so after a few steps parameters, BatchNorm
statistics and metrics agree with one device up to float32 reduction order. Every random
stream (augmentation, input noise, student and Fickle-teacher dropout, logit noise) must not
depend on the sharding either. (tests/test_launch.py runs a whole run on a mesh of 4 devices in
2 processes.)
"""

import jax
import numpy as np
import pytest

from helpers import mesh_of, tiny_config
from nkd import keys as keys_lib
from nkd.data import load_dataset
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd.training.state import create_train_state, make_optimizer
from nkd.training.steps import StepSpec, make_train_step, replicate


def _run_check(overrides, sizes, tmp_path):
  """Three steps of the KD train step on meshes of each size in `sizes`: parameters,
  BatchNorm statistics, losses, where the parameters live and what the compiled program does."""
  jax.config.update("jax_threefry_partitionable", True)  # as nkd.pipeline.setup_jax does
  config = tiny_config(
      tmp_path,
      synthetic_train_size=128,
      synthetic_test_size=16,
      batch_size=32,
      epochs=1,
      mode="kd",
      teacher_workdir="unused",
      **overrides,
  )
  data = load_dataset(config)
  steps_per_epoch = len(data.train_images) // config.batch_size
  model = create_model(config.model, dropout_rate=config.dropout)
  teacher = create_model("wrn-10-1", dropout_rate=0.3)
  teacher_vars = init_variables(teacher, jax.random.key(1))
  spec = StepSpec.from_config(config, steps_per_epoch)
  keys = keys_lib.run_keys(0)
  order = keys_lib.epoch_permutation(keys["data"], 0, len(data.train_images))
  out = {}
  for k in sizes:
    mesh = mesh_of(k)
    state = create_train_state(model, keys["init"], make_optimizer(config, steps_per_epoch))
    state, tvars, images, labels = replicate(
        (state, teacher_vars, data.train_images, data.train_labels), mesh
    )
    # Compiled ahead of time, and that executable run: one compilation per mesh.
    step = (
        make_train_step(model, spec, mesh, teacher)
        .lower(state, tvars, images, labels, order, keys["train"])
        .compile()
    )
    hlo = step.as_text()
    losses = []
    for _ in range(3):
      state, metrics = step(state, tvars, images, labels, order, keys["train"])
      losses.append(float(metrics["loss"]))
    leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
    out[k] = {
        "leaves": [np.asarray(leaf) for leaf in leaves],
        "losses": losses,
        "devices": sorted(d.id for d in state.params["fc"]["kernel"].sharding.device_set),
        # The per-device program: a conv over a 1/k slice of the batch, and all-reduces.
        "local_batch_conv": f"f32[{32 // k},32,32,16]" in hlo,
        "all_reduce": "all-reduce" in hlo,
    }
  return out


# Every source of randomness on (augmentation, input noise, student dropout, Fickle-teacher
# dropout, logit noise): their streams must not depend on how the batch is split.
ALL_NOISE = {
    "dropout": 0.1,
    "fickle_teacher": True,
    "teacher_dropout": 0.3,
    "input_noise_sigma": 0.05,
    "logit_noise_sigma": 0.1,
}


@pytest.fixture(scope="module")
def steps_on_1_2_4_devices(tmp_path_factory):
  return _run_check(ALL_NOISE, [1, 2, 4], tmp_path_factory.mktemp("sharding"))


def test_batch_is_sharded_and_parameters_replicated(steps_on_1_2_4_devices):
  out = steps_on_1_2_4_devices
  assert out[1]["devices"] == [0] and not out[1]["all_reduce"]
  for k in (2, 4):
    assert out[k]["devices"] == list(range(k)), "parameters are not on every device"
    assert out[k]["local_batch_conv"], f"the batch is not split over {k} devices"
    assert out[k]["all_reduce"]


@pytest.mark.parametrize("k", [2, 4])
def test_sharded_step_matches_one_device(steps_on_1_2_4_devices, k):
  out = steps_on_1_2_4_devices
  assert len(out[k]["leaves"]) == len(out[1]["leaves"])
  for a, b in zip(out[k]["leaves"], out[1]["leaves"]):
    a, b = _arr(a), _arr(b)
    assert _close(a, b), f"{k} devices: max |diff| {abs(a - b).max()}"
  assert _close(_arr(out[k]["losses"]), _arr(out[1]["losses"]))


def _arr(x):
  return np.asarray(x, np.float64)


def _close(a, b, rtol=1e-4, atol=1e-5):
  return bool(np.allclose(a, b, rtol=rtol, atol=atol))


def test_evaluation_splits_the_batch_over_the_models_devices():
  """A model replicated on a mesh (as training leaves it) is evaluated data-parallel: each
  device gets its rows, not the whole batch; logits and PGD results are those of one device."""
  from nkd.evaluation import batching, pgd, predict  # pylint: disable=g-import-not-at-top

  model = create_model("wrn-10-1")
  variables = init_variables(model, jax.random.key(0))
  apply_fn = predict.eval_apply_fn(model)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 24).astype(np.int32)
  on_mesh = replicate(variables, mesh_of(4))

  (split,) = batching.split_over_model_devices(on_mesh, images[:8])
  assert tuple(split.sharding.spec) == ("data",) and len(split.addressable_shards) == 4
  assert split.addressable_shards[0].data.shape == (2, 32, 32, 3)
  for unsplit in (
      batching.split_over_model_devices(variables, images[:8]),  # one device
      batching.split_over_model_devices(on_mesh, images[:6]),  # 6 rows, 4 devices
      batching.split_over_model_devices(on_mesh, images[:8], labels[:4]),  # uneven rows
  ):
    assert all(isinstance(b, np.ndarray) for b in unsplit)

  np.testing.assert_allclose(
      predict.compute_logits(apply_fn, on_mesh, images, batch_size=8),
      predict.compute_logits(apply_fn, variables, images, batch_size=8),
      rtol=1e-5,
      atol=1e-5,
  )
  attack = dict(eps=8 / 255, step_size=2 / 255, steps=3, batch_size=8)
  key = jax.random.key(3)
  np.testing.assert_array_equal(
      pgd.correct_under_attack(apply_fn, on_mesh, key, images, labels, **attack),
      pgd.correct_under_attack(apply_fn, variables, key, images, labels, **attack),
  )


@pytest.mark.usefixtures("run_on_all_devices")
def test_the_evaluation_suite_runs_on_the_runs_mesh(tmp_path, monkeypatch):
  """After training (host arrays) and in nkd.evaluate (a restored checkpoint) the model's and
  the teacher's variables reach the evaluators replicated on the run's mesh, as the trainer's
  own evaluations have them: the evaluators split their batches over its devices and share
  those programs."""
  from nkd import pipeline  # pylint: disable=import-outside-toplevel
  from nkd.evaluation import batching  # pylint: disable=import-outside-toplevel
  from nkd.training.teacher import Teacher  # pylint: disable=import-outside-toplevel

  config = tiny_config(tmp_path)
  model = create_model(config.model)
  host = jax.device_get(init_variables(model, jax.random.key(0)))
  seen = {}

  def fake_suite(apply_fn, variables, **kwargs):
    seen["model"], seen["teacher"] = variables, kwargs["teacher"][1]
    return {}

  monkeypatch.setattr(pipeline, "run_suite", fake_suite)
  teacher = Teacher(model=model, variables=host, workdir="", results=None)
  pipeline.evaluate(config, model, host, load_dataset(config), teacher)
  for name in ("model", "teacher"):
    mesh = batching.model_mesh(seen[name])
    assert mesh is not None and mesh.size == len(jax.devices()) > 1, name
