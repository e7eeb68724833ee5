import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd.models.wrn import count_params, create_model, init_variables, parse_model_name


@pytest.mark.parametrize("name,expected", [("wrn-40-2", 2_243_546), ("wrn-16-2", 691_674)])
def test_parameter_counts_match_the_paper(name, expected):
  model = create_model(name)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  assert count_params(variables["params"]) == expected


@pytest.mark.parametrize("name", ["resnet-18", "wrn-15-2", "wrn-4-1", "wrn-16-0", "wrn16-2"])
def test_bad_model_names_are_rejected(name):
  with pytest.raises(ValueError, match="wrn|depth|widen"):
    parse_model_name(name)


def test_train_and_deterministic_are_separate_switches():
  model = create_model("wrn-10-1", dropout_rate=0.5)
  variables = init_variables(model, jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))

  def fickle(key):  # Dropout on, BatchNorm frozen (running statistics, not updated).
    return model.apply(
        variables,
        x,
        train=False,
        deterministic=False,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )

  (a, sa), (b, sb) = fickle(jax.random.key(2)), fickle(jax.random.key(3))
  assert not jnp.allclose(a, b)
  chex.assert_trees_all_equal(sa["batch_stats"], variables["batch_stats"])
  chex.assert_trees_all_equal(sb["batch_stats"], variables["batch_stats"])
  eval_a = model.apply(variables, x, train=False, deterministic=True)
  eval_b = model.apply(variables, x, train=False, deterministic=True)
  chex.assert_trees_all_equal(eval_a, eval_b)
  # Train mode updates the statistics even with dropout off.
  _, updated = model.apply(variables, x, train=True, deterministic=True, mutable=["batch_stats"])
  assert not jnp.allclose(
      updated["batch_stats"]["bn_final"]["BatchNorm_0"]["mean"],
      variables["batch_stats"]["bn_final"]["BatchNorm_0"]["mean"],
  )


def test_bfloat16_compute_returns_float32_logits_close_to_float32():
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  f32 = create_model("wrn-10-1")
  variables = init_variables(f32, jax.random.key(0))
  out32 = f32.apply(variables, x, train=False)
  out16 = create_model("wrn-10-1", dtype="bfloat16").apply(variables, x, train=False)
  chex.assert_type(out16, jnp.float32)
  chex.assert_shape(out16, (2, 10))
  chex.assert_trees_all_close(out16, out32, atol=0.1, rtol=0.1)


@pytest.mark.parametrize(
    "name,key",
    [("wrn-10-1", jax.random.key(3)), ("wrn-16-2", jax.random.PRNGKey(11))],
    ids=["wrn-10-1-typed-key", "wrn-16-2-raw-key"],
)
def test_init_variables_draws_together_the_bits_model_init_draws_one_by_one(name, key):
  """init_variables makes all random draws in one pass (initializers.drawn_together); every
  leaf must equal flax's `model.init`, which draws per parameter, bit for bit."""
  model = create_model(name)
  together = init_variables(model, key)
  one_by_one = jax.jit(
      lambda k: model.init(k, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
  )(key)
  chex.assert_trees_all_equal_structs(together, one_by_one)
  for (path, a), (_, b) in zip(
      jax.tree_util.tree_leaves_with_path(together), jax.tree_util.tree_leaves_with_path(one_by_one)
  ):
    assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)
  # The draws are random and differ per parameter: not zeros, not one draw repeated.
  kernels = [
      np.asarray(v)
      for p, v in jax.tree_util.tree_leaves_with_path(together["params"])
      if "kernel" in jax.tree_util.keystr(p)
  ]
  assert all(k.std() > 0 for k in kernels)
  assert len({k.ravel()[:4].tobytes() for k in kernels}) == len(kernels)
