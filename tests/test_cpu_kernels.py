"""nkd's CPU kernels for convolutions (direct and Winograd) and their kernel gradients
(nkd/cpu_kernels.cc, nkd/cpu_kernels.py, used by nkd/models/conv.py): XLA's convolution and the
gradients JAX's rule gives, exact where the arithmetic is exact, within float32's rounding of
float64, the same bits whatever the thread count, per device on a sharded batch, and XLA's own gradient
where it is switched off, not built or not allowed by --cpu_isa. Tests that run the kernel skip
where it is not built here (not x86-64 with AVX2 + FMA, or no C++ compiler)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from helpers import REPO, mesh_of
from nkd import cpu_kernels, runtime
from nkd.errors import ConfigError
from nkd.models import conv

BUILT = cpu_kernels.library() is not None
needs_kernel = pytest.mark.skipif(
    not BUILT, reason=f"nkd's CPU kernel is not used here: {cpu_kernels.status()}"
)

# (batch, height, width, in features, out features, kernel, stride, padding): the WRN's layer
# kinds, every remainder of the six-channel input blocks, 8- and 16-channel output blocks, an
# empty batch, taps that fall outside on every side. Stride-1 3x3 layers with 8 or more input
# channels (forward and kernel gradient, and input gradients with 8 or more output channels)
# take Winograd's F(2x2, 3x3) or F(3x3, 2x2): tiles spanning blocks, chunks and images (17 x 16
# tiles), an odd output height or width (the last tiles half outside), input channels not a
# multiple of 8, 8-, 16- and 32-channel output blocks, paddings 0, 1 and 2.
CASES = [
    (3, 7, 5, 5, 8, 3, 1, 1),
    (4, 9, 9, 13, 24, 3, 2, 1),
    (2, 8, 8, 3, 16, 1, 2, 0),
    (5, 6, 6, 7, 32, 3, 1, 0),
    (1, 5, 5, 2, 8, 5, 2, 2),
    (17, 8, 8, 16, 16, 3, 1, 1),
    (2, 6, 6, 12, 40, 3, 1, 1),
    (2, 4, 4, 1, 8, 3, 1, 2),
    (0, 4, 4, 3, 8, 3, 1, 1),
    (3, 7, 9, 9, 24, 3, 1, 1),
    (2, 9, 7, 16, 16, 3, 1, 0),
    (2, 5, 6, 8, 8, 3, 1, 2),
    (1, 1, 1, 8, 8, 3, 1, 1),
]


def _vjps(x, kernel, g, stride, pad):
  """(output, input gradient, kernel gradient) for the cotangent g: conv2d's, then XLA's."""
  padding = ((pad, pad), (pad, pad))

  def of(conv_fn):
    y, vjp = jax.vjp(lambda x, w: conv_fn(x, w, stride, padding), x, kernel)
    return (y, *vjp(g))

  ours = jax.jit(lambda x, kernel, g: of(conv.conv2d))
  assert {"@nkd_conv(", "@nkd_conv_kernel_grad("} <= {
      name
      for name in ("@nkd_conv(", "@nkd_conv_kernel_grad(")
      if name in ours.lower(x, kernel, g).as_text()
  }
  return ours(x, kernel, g), of(conv._conv)


def _inputs(case, draw):
  n, h, w, cin, cout, k, stride, pad = case
  out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  rng = np.random.default_rng(n * 31 + cin)
  shapes = ((n, h, w, cin), (k, k, cin, cout), (n, out_h, out_w, cout))
  return [jnp.asarray(draw(rng, shape), jnp.float32) for shape in shapes]


@needs_kernel
@pytest.mark.parametrize("case", CASES)
def test_convolution_and_its_gradients_are_xlas(case):
  x, kernel, g = _inputs(case, lambda rng, shape: rng.normal(size=shape))
  for ours, theirs in zip(*_vjps(x, kernel, g, *case[-2:])):
    theirs = np.asarray(theirs)
    scale = max(1.0, float(np.abs(theirs).max(initial=0)))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6 * scale)


@needs_kernel
@pytest.mark.parametrize("channels", [(16, 32), (64, 64), (128, 128)])
def test_winograd_is_as_accurate_as_xla(channels):
  """Winograd's transforms add rounding steps, but its sums over the input channels are 9 times
  shorter than the direct sum's: against float64, on a WRN layer with He-initialised weights,
  nkd's convolution stays within a few float32 roundings of the largest output (2.4-4.5e-7 on a
  Zen 4 at batch 8; XLA's own 4.6-6.8e-7, the direct kernel's 4.6-14e-7)."""
  cin, cout = channels
  rng = np.random.default_rng(cin)
  x = rng.normal(size=(4, 8, 8, cin)).astype(np.float32)
  w = (rng.normal(size=(3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
  padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  truth = sum(
      np.einsum("nhwi,io->nhwo", padded[:, a : a + 8, b : b + 8], w[a, b].astype(np.float64))
      for a in range(3)
      for b in range(3)
  )
  padding = ((1, 1), (1, 1))
  forward = jax.jit(lambda x, w: conv.conv2d(x, w, 1, padding))
  assert "@nkd_conv(" in forward.lower(x, w).as_text()
  error = np.abs(np.asarray(forward(x, w)) - truth).max() / np.abs(truth).max()
  assert error < 1e-6, error


@needs_kernel
@pytest.mark.parametrize("channels", [(16, 32), (64, 64), (128, 128)])
def test_winograd_kernel_gradient_is_as_accurate_as_xla(channels):
  """The kernel gradient of a stride-1 3x3 layer takes Winograd's F(3x3, 2x2): against float64,
  within a few float32 roundings of the largest element (1.8-2.9e-7 on a Zen 4 at batch 8, the
  direct kernel's 1.5-3.8e-7, XLA's 4.5-5.5e-7)."""
  cin, cout = channels
  rng = np.random.default_rng(cin)
  x = rng.normal(size=(8, 8, 8, cin)).astype(np.float32)
  g = rng.normal(size=(8, 8, 8, cout)).astype(np.float32)
  padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  truth = np.empty((3, 3, cin, cout))
  for a in range(3):
    for b in range(3):
      window = padded[:, a : a + 8, b : b + 8]
      truth[a, b] = np.einsum("nhwi,nhwo->io", window, g.astype(np.float64))
  kernel = jnp.zeros((3, 3, cin, cout), jnp.float32)
  padding = ((1, 1), (1, 1))
  grad = jax.jit(lambda x, g: jax.vjp(lambda w: conv.conv2d(x, w, 1, padding), kernel)[1](g)[0])
  assert "@nkd_conv_kernel_grad(" in grad.lower(x, g).as_text()
  error = np.abs(np.asarray(grad(x, g)) - truth).max() / np.abs(truth).max()
  assert error < 1e-6, error


@needs_kernel
@pytest.mark.parametrize("case", CASES)
def test_exact_where_the_arithmetic_is(case):
  """Small integers: every product and sum is exact, so any misplaced tap, row or channel
  shows as a difference from XLA's (also exact) results."""
  x, kernel, g = _inputs(case, lambda rng, shape: rng.integers(-3, 4, shape))
  for ours, theirs in zip(*_vjps(x, kernel, g, *case[-2:])):
    np.testing.assert_array_equal(ours, theirs)


_HASH_SCRIPT = """
import hashlib, os, sys
{affinity}
import jax, jax.numpy as jnp, numpy as np
from nkd import runtime
runtime.pin_cpu(runtime.DEFAULT_CPU_ISA)
from nkd.models import conv
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(37, 16, 16, 32)), jnp.float32)
g = jnp.asarray(rng.normal(size=(37, 8, 8, 64)), jnp.float32)
kernel = jnp.zeros((3, 3, 32, 64), jnp.float32)
grad = jax.jit(lambda x, g: jax.vjp(lambda w: conv.conv2d(x, w, 2, ((1, 1), (1, 1))), kernel)[1](g)[0])
forward = jax.jit(lambda x, w: conv.conv2d(x, w, 2, ((1, 1), (1, 1))))
w = jnp.asarray(rng.normal(size=(3, 3, 32, 64)), jnp.float32)
winograd = jax.jit(lambda x, w: conv.conv2d(x, w, 1, ((1, 1), (1, 1))))
v = jnp.asarray(rng.normal(size=(3, 3, 32, 32)), jnp.float32)
h = jnp.asarray(rng.normal(size=(37, 16, 16, 32)), jnp.float32)
winograd_grad = jax.jit(lambda x, h: jax.vjp(lambda w: conv.conv2d(x, w, 1, ((1, 1), (1, 1))), v)[1](h)[0])
both = np.concatenate([np.ravel(grad(x, g)), np.ravel(forward(x, w)), np.ravel(winograd(x, v)),
                       np.ravel(winograd_grad(x, h))])
print(hashlib.sha256(both.tobytes()).hexdigest())
"""


def _hash_in_child(affinity: str = "") -> str:
  env = {**os.environ, "PYTHONPATH": REPO}
  env.pop("XLA_FLAGS", None)
  out = subprocess.run(
      [sys.executable, "-c", _HASH_SCRIPT.format(affinity=affinity)],
      capture_output=True,
      text=True,
      env=env,
      cwd=REPO,
      check=True,
  )
  return out.stdout.split()[-1]


@needs_kernel
@pytest.mark.skipif(runtime.usable_cores() < 2, reason="one core: no other thread count to try")
def test_same_bits_on_one_core_as_on_all():
  """Work is split by the shape alone (chunks of images, blocks of pixels or of Winograd's
  tiles); threads only pick up parts, so the convolution and its kernel gradient (direct and
  Winograd) have the same bits on 1 core as on all."""
  all_cores = _hash_in_child()
  one_core = _hash_in_child("os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})")
  assert one_core == all_cores


@needs_kernel
def test_on_a_sharded_batch_each_device_takes_its_rows():
  mesh = mesh_of(4)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 6, 6, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)
  replicated = NamedSharding(mesh, P())

  def grad(w, x):
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    loss = lambda w: jnp.sum(jnp.sin(conv.conv2d(x, w, 1, ((1, 1), (1, 1)))))  # noqa: E731
    with conv.batch_sharded(mesh):
      return jax.grad(loss)(w)

  step = jax.jit(grad, in_shardings=replicated, out_shardings=replicated)
  text = step.lower(w, x).compile().as_text()
  calls = [
      line for line in text.splitlines() if "nkd_conv_kernel_grad" in line and "custom-call" in line
  ]
  assert calls and all("f32[2,6,6,8]" in line for line in calls), calls
  assert "all-gather" not in text and "all-reduce" in text
  theirs = jax.grad(lambda w: jnp.sum(jnp.sin(conv._conv(x, w, 1, ((1, 1), (1, 1))))))(w)
  np.testing.assert_allclose(step(w, x), theirs, rtol=1e-4, atol=1e-4)


def _forget_the_choice():
  cpu_kernels._library.cache_clear()
  conv._kernels_registered.cache_clear()


@pytest.fixture
def fresh_choice():
  """The choice of kernel made anew in the test, and again after it (settings restored)."""
  _forget_the_choice()
  yield
  _forget_the_choice()


def _uses_kernel() -> bool:
  x, w = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
  f = jax.grad(lambda w: jnp.sum(conv.conv2d(x, w, 1, ((1, 1), (1, 1)))))
  return "nkd_conv_kernel_grad" in jax.jit(f).lower(w).as_text()


def test_off_gives_xlas_gradient_and_says_so(monkeypatch, fresh_choice):
  monkeypatch.setenv(cpu_kernels.ENV, "off")
  assert cpu_kernels.status() == {"convolutions": "xla (NKD_CPU_KERNELS=off)"}
  assert not _uses_kernel()
  assert runtime.describe()["kernels"] == cpu_kernels.status()


def test_a_bad_setting_names_the_variable(monkeypatch, fresh_choice):
  monkeypatch.setenv(cpu_kernels.ENV, "yes")
  with pytest.raises(ConfigError, match="NKD_CPU_KERNELS='yes': expected 'on' or 'off'"):
    cpu_kernels.status()


@pytest.mark.skipif(not runtime.is_x86() or "AVX2" not in runtime.host_isas(), reason="no AVX2")
def test_an_isa_cap_below_avx2_keeps_xlas_gradient(monkeypatch, fresh_choice):
  monkeypatch.setitem(runtime._pinned, "isa", "AVX")
  monkeypatch.setitem(runtime._pinned, "isa_source", "--cpu_isa")
  monkeypatch.setitem(runtime._pinned, "settings", {})
  assert cpu_kernels.status() == {"convolutions": "xla (--cpu_isa AVX is below AVX2)"}
  assert not _uses_kernel()


@pytest.mark.skipif(not runtime.is_x86() or "AVX2" not in runtime.host_isas(), reason="no AVX2")
def test_without_a_compiler_xlas_gradient_is_used(monkeypatch, fresh_choice):
  monkeypatch.setattr(cpu_kernels, "_compiler", lambda: None)
  assert "no C++ compiler" in cpu_kernels.status()["convolutions"]
  assert not _uses_kernel()


@needs_kernel
def test_built_once_into_the_kernel_folder_by_a_hash_of_its_inputs(
    monkeypatch, tmp_path, fresh_choice
):
  monkeypatch.setenv(cpu_kernels.DIR_ENV, str(tmp_path / "kernels"))
  path = cpu_kernels.library()
  assert os.path.dirname(path) == str(tmp_path / "kernels")
  assert os.listdir(tmp_path / "kernels") == [os.path.basename(path)]  # no temporary left
  stamp = os.stat(path).st_mtime_ns
  cpu_kernels._library.cache_clear()
  assert cpu_kernels.library() == path and os.stat(path).st_mtime_ns == stamp  # not rebuilt


def test_the_gpu_program_has_no_cpu_kernel_and_xlas_convolutions():
  """Lowered for CUDA (no GPU needed), the gradient is JAX's: the CPU branch is not lowered."""
  from jax import export  # pylint: disable=g-import-not-at-top

  x, w = jnp.ones((4, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
  grad = jax.jit(jax.grad(lambda w: jnp.sum(jnp.sin(conv.conv2d(x, w, 1, ((1, 1), (1, 1)))))))
  text = export.export(grad, platforms=("cuda",))(w).mlir_module()
  assert "nkd_conv_kernel_grad" not in text
  assert text.count("stablehlo.convolution") == 2  # the forward and JAX's kernel gradient
