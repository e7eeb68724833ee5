"""2-D convolution (NHWC, HWIO) whose input gradient stays on XLA:CPU's fast path.

JAX's transpose rule writes the input gradient as a convolution with the kernel's feature
dimensions swapped and, for a strided layer, with base (lhs) dilation. XLA:CPU brings such a
convolution into canonical layout only in the entry computation, and no library kernel takes
base dilation, so inside a loop (PGD, APGD, FAB, EOT) and for every strided layer it runs XLA's
naive loop ("unoptimized convolution", jax-ml/jax#12868). Here, on CPU, the input gradient is
written in canonical layout: input row i = s m + a of phase a gets
dx[s m + a] = sum_{t = a + lo (mod s)} g[m + (a + lo - t) / s] w[t], a stride-1 convolution of
the cotangent with the phase's taps, and the s x s phases are interleaved. The kernel gradient
is JAX's own; on GPU and TPU the whole convolution is `lax.conv_general_dilated` with JAX's rule.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

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


def _canonical_conv_bwd(stride, padding, residuals, g):
  x, kernel = residuals
  dx = _input_gradient(g, kernel, x.shape, stride, padding).astype(x.dtype)
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, stride, padding), kernel)
  return (dx, *kernel_vjp(g))


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
