"""2-D convolution (NHWC, HWIO) whose input gradient stays on XLA:CPU's fast path.

JAX's transpose rule writes the input gradient as a convolution with the kernel's feature
dimensions swapped and, for a strided layer, with base (lhs) dilation. XLA:CPU brings such a
convolution into canonical layout only in the entry computation, and no library kernel takes
base dilation, so inside a loop (PGD, APGD, FAB, EOT) and for every strided layer it runs XLA's
naive loop ("unoptimized convolution", jax-ml/jax#12868). Here, on CPU, the input gradient is
written in canonical layout: input row i = s m + a of phase a gets
dx[s m + a] = sum_{t = a + lo (mod s)} g[m + (a + lo - t) / s] w[t], a stride-1 convolution of
the cotangent with the phase's taps, and the s x s phases are interleaved.

The kernel gradient on CPU is nkd's own kernel (`nkd/cpu_kernels.cc`, an XLA FFI call) where
`nkd.cpu_kernels` built it for this machine, for float32 and output channels a multiple of 8;
else JAX's rule. XLA:CPU runs JAX's as a convolution over transposed operands: on a 2-vCPU Zen 4
(AVX-512, jaxlib 0.10.2, nkd's CPU settings), batch 128, 63 GFLOP/s for a 32x32x32 -> 32 layer
and 13 for the strided 1x1 shortcut, against 180 and 87 for nkd's kernel, whose bits are the
same on every AVX2 + FMA CPU (BENCHMARKS.md has every layer). On GPU and TPU the whole convolution is `lax.conv_general_dilated` with JAX's rule.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nkd import cpu_kernels

Padding = tuple[tuple[int, int], tuple[int, int]]
_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, stride: int, padding: Padding):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DIMS)


def _phase(size: int, out_size: int, kernel_size: int, stride: int, pad_low: int, a: int):
  """Phase a of one spatial axis: (the taps from last to first, as a slice of the kernel axis;
  the cotangent's padding) for a stride-1 correlation giving rows a, a + s, ... of dx; None if
  no tap reaches them."""
  taps = [t for t in range(kernel_size) if (a + pad_low - t) % stride == 0]
  if not taps:
    return None
  offset_low = (a + pad_low - taps[-1]) // stride  # the last tap reads the lowest row of g
  offset_high = (a + pad_low - taps[0]) // stride
  rows = -(-size // stride)  # every phase computes ceil(size / s) rows; the excess is cut
  taps_reversed = slice(taps[-1], None if taps[0] < stride else taps[0] - stride, -stride)
  return taps_reversed, (-offset_low, rows - 1 + offset_high - (out_size - 1))


def _input_gradient(g, kernel, input_shape: Sequence[int], stride: int, padding: Padding):
  """d conv / d x for the cotangent g (N, Ho, Wo, O), from canonical stride-1 convolutions."""
  n, height, width, _ = input_shape
  kh, kw, cin, _ = kernel.shape
  transposed = kernel.transpose(0, 1, 3, 2)  # HWIO -> HW(O)(I): the cotangent's features in
  rows = [_phase(height, g.shape[1], kh, stride, padding[0][0], a) for a in range(stride)]
  cols = [_phase(width, g.shape[2], kw, stride, padding[1][0], b) for b in range(stride)]
  shape = (n, -(-height // stride), -(-width // stride), cin)
  planes = []
  for row in rows:
    line = []
    for col in cols:
      if row is None or col is None:
        line.append(jnp.zeros(shape, g.dtype))
      else:
        line.append(_conv(g, transposed[row[0], col[0]], 1, (row[1], col[1])))
    planes.append(jnp.stack(line, axis=3) if stride > 1 else line[0])
  if stride == 1:
    return planes[0]
  dx = jnp.stack(planes, axis=2).reshape(n, shape[1] * stride, shape[2] * stride, cin)
  return dx[:, :height, :width, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _canonical_conv(x, kernel, stride: int, padding: Padding):
  return _conv(x, kernel, stride, padding)


def _canonical_conv_fwd(x, kernel, stride, padding):
  return _conv(x, kernel, stride, padding), (x, kernel)


@functools.cache
def _kernel_gradient_target() -> str | None:
  """The FFI target of nkd's kernel gradient, registered once; None where it is not built."""
  path = cpu_kernels.library()
  if path is None:
    return None
  library = ctypes.cdll.LoadLibrary(path)
  jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.NkdConvKernelGrad), platform="cpu")
  return _TARGET


_TARGET = "nkd_conv_kernel_grad"


_BATCH_AXIS = "data"
_batch_mesh: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar(
    "batch_mesh", default=None
)


@contextlib.contextmanager
def batch_sharded(mesh: Mesh) -> Iterator[None]:
  """Gradients traced inside are of a batch sharded over `mesh`'s 'data' axis: nkd's kernel
  gradient then runs on each device's rows and sums over the axis (an FFI call is opaque to
  XLA's partitioner, which would gather the whole batch onto every device and repeat it)."""
  token = _batch_mesh.set(mesh)
  try:
    yield
  finally:
    _batch_mesh.reset(token)


def _kernel_gradient(x, g, kernel, stride: int, padding: Padding):
  """d conv / d kernel for the cotangent g: nkd's CPU kernel where it applies, else JAX's."""
  usable = x.dtype == g.dtype == kernel.dtype == jnp.float32 and kernel.shape[3] % 8 == 0
  if not (usable and _kernel_gradient_target()):
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, stride, padding), kernel)
    return kernel_vjp(g)[0]
  ffi = jax.ffi.ffi_call(
      _TARGET, jax.ShapeDtypeStruct(kernel.shape, jnp.float32), vmap_method="sequential"
  )
  attrs = dict(
      stride=np.int64(stride), pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0])
  )
  mesh = _batch_mesh.get()
  shards = mesh.shape.get(_BATCH_AXIS, 1) if mesh is not None else 1
  if shards == 1 or x.shape[0] % shards:
    return ffi(x, g, **attrs)
  local = lambda x, g: lax.psum(ffi(x, g, **attrs), _BATCH_AXIS)  # noqa: E731
  spec = P(_BATCH_AXIS)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=P(), check_vma=False)(
      x, g
  )


def _canonical_conv_bwd(stride, padding, residuals, g):
  x, kernel = residuals
  dx = _input_gradient(g, kernel, x.shape, stride, padding).astype(x.dtype)
  return dx, _kernel_gradient(x, g, kernel, stride, padding)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def conv2d(x, kernel, stride: int = 1, padding: Padding = ((0, 0), (0, 0))):
  """`lax.conv_general_dilated` (NHWC, HWIO); on CPU with the canonical input gradient."""
  stride = int(stride)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return lax.platform_dependent(
      x,
      kernel,
      cpu=lambda x, k: _canonical_conv(x, k, stride, padding),
      default=lambda x, k: _conv(x, k, stride, padding),
  )
