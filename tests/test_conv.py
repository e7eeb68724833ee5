"""nkd.models.conv: the canonical input gradient equals JAX's, and keeps XLA:CPU on its fast
path inside a loop (no base-dilated or non-canonical convolution left in the program). nkd's
own CPU kernels behind it are tested in tests/test_cpu_kernels.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd.models.conv import _conv, conv2d

# (size, in features, out features, kernel, stride, padding): the WRN's layers and odd ones.
CASES = [
    (8, 3, 16, 3, 1, 1),
    (8, 4, 6, 3, 2, 1),
    (8, 4, 6, 1, 2, 0),
    (9, 3, 5, 3, 2, 1),
    (9, 2, 3, 5, 3, 2),
    (7, 2, 2, 4, 2, 1),
    (6, 2, 3, 1, 1, 0),
]


@pytest.mark.parametrize("size,cin,cout,k,stride,pad", CASES)
def test_gradients_match_jax_and_the_forward_is_the_same(size, cin, cout, k, stride, pad):
  rng = np.random.default_rng(size * k + stride)
  x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
  padding = ((pad, pad), (pad, pad))
  ours = lambda x, w: conv2d(x, w, stride, padding)  # noqa: E731
  theirs = lambda x, w: _conv(x, w, stride, padding)  # noqa: E731
  # Equal up to rounding: on CPU nkd's kernel sums in its own order (tests/test_cpu_kernels.py).
  np.testing.assert_allclose(jax.jit(ours)(x, w), jax.jit(theirs)(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))  # noqa: E731
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(theirs), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=0, atol=5e-6 * float(np.abs(b).max()))


def test_in_a_loop_every_convolution_is_canonical_and_none_is_base_dilated():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))

  def attack(conv):
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w, 2, ((1, 1), (1, 1))))))
    return lambda x: jax.lax.fori_loop(0, 2, lambda i, x: x + 0.1 * grad(x), x)

  def convolutions(conv):
    text = jax.jit(attack(conv)).lower(x).compile().as_text()
    return [line for line in text.splitlines() if re.search(r"\bconvolution\(", line)]

  ours = convolutions(conv2d)
  assert ours and all(
      "dim_labels=b01f_01io->b01f" in line and "lhs_dilate" not in line for line in ours
  )
  # What JAX's own rule gives there (what this module replaces): a base-dilated convolution
  # with the kernel's features swapped.
  assert any("lhs_dilate" in line for line in convolutions(_conv))
