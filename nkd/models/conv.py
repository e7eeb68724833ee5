"""2-D convolution (NHWC, HWIO) whose input gradient stays on XLA:CPU's fast path.

JAX's transpose rule writes the input gradient as a convolution with the kernel's feature
dimensions swapped and, for a strided layer, with base (lhs) dilation. XLA:CPU brings such a
convolution into canonical layout only in the entry computation, and no library kernel takes
base dilation, so inside a loop (PGD, APGD, FAB, EOT) and for every strided layer it runs XLA's
naive loop ("unoptimized convolution", jax-ml/jax#12868). Here, on CPU, the input gradient is
written in canonical layout: input row i = s m + a of phase a gets
dx[s m + a] = sum_{t = a + lo (mod s)} g[m + (a + lo - t) / s] w[t], a stride-1 convolution of
the cotangent with the phase's taps, and the s x s phases are interleaved.

On CPU, the convolutions (the forward pass and the input gradient's phases) and the kernel
gradient are nkd's own kernels (`nkd/cpu_kernels.cc`, XLA FFI calls) where `nkd.cpu_kernels`
built them for this machine, for float32 and output channels a multiple of 8; else XLA's
convolution and JAX's rule. XLA:CPU runs JAX's kernel gradient as a convolution over transposed
operands: on a 2-vCPU Zen 4 (AVX-512, jaxlib 0.10.2, nkd's CPU settings), batch 128, 81-90
GFLOP/s for a 32x32x32 -> 32 layer and 24 for the strided 1x1 shortcut, against 280 (the
equivalent of a direct sum: Winograd's F(3x3, 2x2) does fewer) and 100 for nkd's kernel; nkd's
convolution (Winograd's F(2x2, 3x3) for stride-1 3x3 layers) runs at the equivalent of 200-400
GFLOP/s of direct convolution on a WRN's 3x3 layers, XLA's at 79-187.
Their bits are the same on every AVX2 + FMA CPU (BENCHMARKS.md has every layer). Inside `batch_sharded`
they run on each device's rows of a sharded batch. On GPU and TPU the whole convolution is
`lax.conv_general_dilated` with JAX's rule.
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
        line.append(_cpu_conv(g, transposed[row[0], col[0]], 1, (row[1], col[1])))
    planes.append(jnp.stack(line, axis=3) if stride > 1 else line[0])
  if stride == 1:
    return planes[0]
  dx = jnp.stack(planes, axis=2).reshape(n, shape[1] * stride, shape[2] * stride, cin)
  return dx[:, :height, :width, :]


_CONV_TARGET = "nkd_conv"
_KERNEL_GRADIENT_TARGET = "nkd_conv_kernel_grad"


@functools.cache
def _kernels_registered() -> bool:
  """Registers nkd's CPU kernels as FFI targets, once; False where they are not built."""
  path = cpu_kernels.library()
  if path is None:
    return False
  library = ctypes.cdll.LoadLibrary(path)
  for target, symbol in (
      (_CONV_TARGET, library.NkdConv),
      (_KERNEL_GRADIENT_TARGET, library.NkdConvKernelGrad),
  ):
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform="cpu")
  return True


_BATCH_AXIS = "data"
_batch_mesh: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar(
    "batch_mesh", default=None
)


@contextlib.contextmanager
def batch_sharded(mesh: Mesh | None) -> Iterator[None]:
  """Convolutions traced inside take a batch sharded over `mesh`'s 'data' axis (None: not
  sharded): nkd's CPU kernels then run on each device's rows (the kernel gradient summed over
  the axis). An FFI call is opaque to XLA's partitioner, which would gather the whole batch
  onto every device and repeat the work there."""
  token = _batch_mesh.set(mesh)
  try:
    yield
  finally:
    _batch_mesh.reset(token)


def _call_on_shards(call, *arrays, summed: bool = False):
  """call(*arrays), or inside `batch_sharded` on each device's rows of the batch (axis 0): the
  results stacked as the batch is (summed over the devices if `summed`)."""
  mesh = _batch_mesh.get()
  shards = mesh.shape.get(_BATCH_AXIS, 1) if mesh is not None else 1
  if shards == 1 or arrays[0].shape[0] % shards:
    return call(*arrays)
  local = (lambda *a: lax.psum(call(*a), _BATCH_AXIS)) if summed else call
  spec = P(_BATCH_AXIS)
  return jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(spec,) * len(arrays),
      out_specs=P() if summed else spec,
      check_vma=False,
  )(*arrays)


def _attrs(stride: int, padding: Padding) -> dict:
  return dict(
      stride=np.int64(stride), pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0])
  )


def _usable(*arrays) -> bool:
  """nkd's CPU kernels take float32 and output channels a multiple of 8."""
  return (
      all(a.dtype == jnp.float32 for a in arrays)
      and arrays[-1].shape[-1] % 8 == 0
      and _kernels_registered()
  )


def _cpu_conv(x, kernel, stride: int, padding: Padding):
  """The convolution on CPU: nkd's kernel where it applies, else XLA's."""
  kh, kw = kernel.shape[:2]
  out_h = (x.shape[1] + sum(padding[0]) - kh) // stride + 1
  out_w = (x.shape[2] + sum(padding[1]) - kw) // stride + 1
  if not (_usable(x, kernel) and out_h > 0 and out_w > 0):
    return _conv(x, kernel, stride, padding)
  attrs = _attrs(stride, padding)

  def call(x, kernel):
    out = jax.ShapeDtypeStruct((x.shape[0], out_h, out_w, kernel.shape[3]), jnp.float32)
    return jax.ffi.ffi_call(_CONV_TARGET, out, vmap_method="sequential")(x, kernel, **attrs)

  return _call_on_shards(lambda x: call(x, kernel), x)


def _kernel_gradient(x, g, kernel, stride: int, padding: Padding):
  """d conv / d kernel for the cotangent g: nkd's CPU kernel where it applies, else JAX's."""
  if not _usable(x, kernel, g):
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, stride, padding), kernel)
    return kernel_vjp(g)[0]
  out = jax.ShapeDtypeStruct(kernel.shape, jnp.float32)
  ffi = jax.ffi.ffi_call(_KERNEL_GRADIENT_TARGET, out, vmap_method="sequential")
  attrs = _attrs(stride, padding)
  return _call_on_shards(lambda x, g: ffi(x, g, **attrs), x, g, summed=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _canonical_conv(x, kernel, stride: int, padding: Padding):
  return _cpu_conv(x, kernel, stride, padding)


def _canonical_conv_fwd(x, kernel, stride, padding):
  return _cpu_conv(x, kernel, stride, padding), (x, kernel)


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
