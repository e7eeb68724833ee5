"""Image operations that make_cifar_c.py takes from OpenCV, ImageMagick and scikit-image.

Re-derived in numpy/scipy from those libraries' algorithms, so CIFAR-10-C can be regenerated
without Wand/ImageMagick, OpenCV or scikit-image. Every function works on a batch (axis 0).
The OpenCV ones were checked against OpenCV 4 (see tests/test_evaluation_corruptions.py for what
is checked here, against scipy, without OpenCV).
"""

from __future__ import annotations

import numpy as np

from nkd.lazy import lazy_module

ndimage = lazy_module("scipy.ndimage")


def gaussian(
    x: np.ndarray, sigma: float, *, axes=(1, 2), mode: str = "nearest", truncate: float = 4.0
) -> np.ndarray:
  """skimage.filters.gaussian on float input: scipy's gaussian_filter on the given axes."""
  sigmas = [0.0] * x.ndim
  for axis in axes:
    sigmas[axis] = sigma
  return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
  """cv2.getGaussianKernel(ksize, sigma) for sigma > 0."""
  offsets = np.arange(ksize) - (ksize - 1) / 2
  kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
  return kernel / kernel.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """make_cifar_c's disk(): an aliased disk, normalised, then cv2.GaussianBlur'd (reflect-101)."""
  if radius <= 8:
    grid, ksize = np.arange(-8, 8 + 1), 3
  else:
    grid, ksize = np.arange(-radius, radius + 1), 5
  xx, yy = np.meshgrid(grid, grid)
  disk = np.asarray(xx**2 + yy**2 <= radius**2, np.float32)
  disk /= np.sum(disk)
  g = cv2_gaussian_kernel(ksize, alias_blur)
  disk = ndimage.correlate1d(disk.astype(np.float64), g, axis=0, mode="mirror")
  disk = ndimage.correlate1d(disk, g, axis=1, mode="mirror")
  return disk.astype(np.float32)


def crop_kernel(kernel: np.ndarray, rel_tol: float = 1e-12) -> np.ndarray:
  """Drops outer rows/columns whose weights are all below rel_tol * max (speed, not result)."""
  keep = kernel > rel_tol * kernel.max()
  rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
  r = max(rows[-1] - kernel.shape[0] // 2, kernel.shape[0] // 2 - rows[0])
  c = max(cols[-1] - kernel.shape[1] // 2, kernel.shape[1] // 2 - cols[0])
  cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
  return kernel[cy - r : cy + r + 1, cx - c : cx + c + 1]


def filter2d_reflect101(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """cv2.filter2D(img, -1, kernel) per channel: correlation, BORDER_REFLECT_101 (B, H, W, C)."""
  return ndimage.correlate(images, kernel[None, :, :, None], mode="mirror")


def box_blur3_reflect101(images: np.ndarray) -> np.ndarray:
  """cv2.blur(img, (3, 3)) on float (B, H, W): 3x3 mean, BORDER_REFLECT_101."""
  out = ndimage.correlate1d(images.astype(np.float64), np.full(3, 1.0), axis=1, mode="mirror")
  out = ndimage.correlate1d(out, np.full(3, 1.0), axis=2, mode="mirror")
  return out / 9.0


# ----- ImageMagick -----------------------------------------------------------------------------


def motion_blur(
    images: np.ndarray, radius: float, sigma: float, angles_deg: np.ndarray
) -> np.ndarray:
  """ImageMagick MagickMotionBlurImage(radius, sigma, angle), one angle per image.

  The kernel is a one-sided Gaussian over width = 2 * ceil(radius) + 1 taps along the angle;
  pixels outside the image take the edge value (ImageMagick's default virtual-pixel method).
  images: (B, H, W, C) in 0..255; returns the 8-bit result as a Q16 ImageMagick writes it to
  PNG, as float64 (checked equal to ImageMagick 6.9.11 Q16 `-motion-blur` on random images).
  """
  batch, height, width_px = images.shape[:3]
  width = int(2 * np.ceil(radius) + 1)
  taps = np.arange(width)
  kernel = np.exp(-(taps.astype(np.float64) ** 2) / (2.0 * sigma * sigma))
  kernel /= kernel.sum()
  angles = np.deg2rad(np.asarray(angles_deg, np.float64))
  point_x, point_y = width * np.sin(angles), width * np.cos(angles)
  hyp = np.hypot(point_x, point_y)
  offset_x = np.ceil(taps[None, :] * point_y[:, None] / hyp[:, None] - 0.5).astype(np.int64)
  offset_y = np.ceil(taps[None, :] * point_x[:, None] / hyp[:, None] - 0.5).astype(np.int64)
  b = np.arange(batch)[:, None, None]
  rows, cols = np.arange(height)[None, :, None], np.arange(width_px)[None, None, :]
  quanta = images.astype(np.float64) * 257.0  # 8-bit values as 16-bit quanta (Q16 build)
  out = np.zeros(images.shape, np.float64)
  for i in range(width):
    r = np.clip(rows + offset_y[:, i, None, None], 0, height - 1)
    c = np.clip(cols + offset_x[:, i, None, None], 0, width_px - 1)
    out += kernel[i] * quanta[b, r, c]
  # Rounded to a 16-bit quantum (ClampToQuantum of a non-HDRI Q16 build), then scaled down to
  # the 8-bit PNG by truncation: the rule that reproduces ImageMagick's output.
  q = np.clip(np.floor(out + 0.5), 0, 65535).astype(np.int64)
  return (q // 257).astype(np.float64)


# ----- scipy.ndimage.zoom (order 1) and make_cifar_c's clipped_zoom ---------------------------


def zoom_linear(x: np.ndarray, factor: float, axes=(1, 2)) -> np.ndarray:
  """scipy.ndimage.zoom(x, factor on `axes`, order=1) (grid_mode=False), batched and separable."""
  out = x.astype(np.float64)
  for axis in axes:
    n_in = out.shape[axis]
    n_out = int(round(n_in * factor))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    coords = np.arange(n_out) * scale
    lo = np.clip(np.floor(coords).astype(np.int64), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = coords - lo
    # scipy's mode="constant" gives cval (0) where rounding puts a coordinate past the last
    # sample, e.g. 41 * (23 / 41) > 23: such a row or column comes out 0, as in scipy.
    inside = coords <= n_in - 1
    shape = [1] * out.ndim
    shape[axis] = n_out
    frac, inside = frac.reshape(shape), inside.reshape(shape)
    out = (np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac) * inside
  return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)


def clipped_zoom(x: np.ndarray, zoom_factor: float) -> np.ndarray:
  """make_cifar_c's clipped_zoom on (B, H, H, C): centre crop, zoom (order 1), centre trim."""
  h = x.shape[1]
  ch = int(np.ceil(h / zoom_factor))
  top = (h - ch) // 2
  y = zoom_linear(x[:, top : top + ch, top : top + ch], zoom_factor)
  trim = (y.shape[1] - h) // 2
  return y[:, trim : trim + h, trim : trim + h]


# ----- skimage.color ---------------------------------------------------------------------------


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
  """skimage.color.rgb2hsv (float in [0, 1], channels last)."""
  v = rgb.max(axis=-1)
  delta = np.ptp(rgb, axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    s = np.where(delta == 0, 0.0, delta / v)
    h = np.zeros_like(v)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Later assignments win, as in skimage: blue over green over red.
    h = np.where(r == v, (g - b) / delta, h)
    h = np.where(g == v, 2.0 + (b - r) / delta, h)
    h = np.where(b == v, 4.0 + (r - g) / delta, h)
    h = (h / 6.0) % 1.0
  h = np.where(delta == 0, 0.0, h)
  return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
  """skimage.color.hsv2rgb."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = np.floor(h * 6)
  f = h * 6 - hi
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  hi = hi.astype(np.int64) % 6
  choices = np.stack(
      [
          np.stack(c, axis=-1)
          for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
      ]
  )
  return np.take_along_axis(choices, hi[None, ..., None].repeat(3, axis=-1), axis=0)[0]


def rgb2gray_cv2(rgb: np.ndarray) -> np.ndarray:
  """cv2.cvtColor(x, COLOR_RGB2GRAY) for float images."""
  return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# ----- OpenCV: warpAffine, Canny, distanceTransform, equalizeHist ------------------------------


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """cv2.getAffineTransform for a batch: (B, 3, 2) x (B, 3, 2) -> (B, 2, 3), src -> dst."""
  a = np.concatenate([src.astype(np.float64), np.ones(src.shape[:-1] + (1,))], axis=-1)
  return np.swapaxes(np.linalg.solve(a, dst.astype(np.float64)), -1, -2)


def _reflect101(index: np.ndarray, n: int) -> np.ndarray:
  period = 2 * (n - 1)
  index = np.abs(index) % period
  return np.where(index > n - 1, period - index, index)


def warp_affine_reflect101(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
  """cv2.warpAffine(img, M, (W, H), borderMode=BORDER_REFLECT_101), bilinear, float images.

  dst(x, y) = src(M^-1 (x, y)), with OpenCV's fixed-point source coordinates (1/32 pixel).
  """
  batch, height, width = images.shape[:3]
  linear, shift = matrices[:, :, :2], matrices[:, :, 2:]
  inv = np.linalg.inv(linear)
  inv = np.concatenate([inv, -inv @ shift], axis=-1)  # (B, 2, 3)
  xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
  ab_scale, round_delta = 1024, 16  # AB_BITS = 10, INTER_BITS = 5

  def fixed(row):  # source coordinate in 1/32 pixel, as OpenCV's warpAffine computes it
    per_x = np.rint(inv[:, row, 0, None, None] * xs[None, None, :] * ab_scale)
    per_y = np.rint(
        (inv[:, row, 1, None, None] * ys[None, :, None] + inv[:, row, 2, None, None]) * ab_scale
    )
    return (per_x + per_y + round_delta).astype(np.int64) >> 5

  src_x, src_y = fixed(0), fixed(1)
  x0, y0 = src_x >> 5, src_y >> 5
  fx, fy = (src_x & 31) / 32.0, (src_y & 31) / 32.0
  b = np.arange(batch)[:, None, None]
  out = 0.0
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      r, c = _reflect101(y0 + dy, height), _reflect101(x0 + dx, width)
      out = out + (wy * wx)[..., None] * images[b, r, c]
  return out.astype(images.dtype)


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
_CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)


def canny(images: np.ndarray, low: float, high: float) -> np.ndarray:
  """cv2.Canny(img, low, high) (aperture 3, L1 gradient) on uint8 (B, H, W): 255 at edges.

  Sobel with replicated borders, non-maximum suppression in OpenCV's integer form, and
  hysteresis: weak pixels 8-connected to a strong one become edges.
  """
  a = images.astype(np.int64)
  dx = ndimage.correlate(a, _SOBEL_X[None], mode="nearest")
  dy = ndimage.correlate(a, _SOBEL_X.T[None], mode="nearest")
  mag = np.abs(dx) + np.abs(dy)
  padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
  height, width = padded.shape[1] - 1, padded.shape[2] - 1
  nb = lambda r, c: padded[:, 1 + r : height + r, 1 + c : width + c]  # noqa: E731
  ax, ay = np.abs(dx), np.abs(dy) << 15
  tg22x = ax * _CANNY_TG22
  tg67x = tg22x + (ax << 16)
  horizontal = ay < tg22x
  vertical = ~horizontal & (ay > tg67x)
  diagonal = ~horizontal & ~vertical
  s_pos = (dx ^ dy) >= 0  # s = +1: up-left and down-right; s = -1: up-right and down-left
  keep = np.where(horizontal, (mag > nb(0, -1)) & (mag >= nb(0, 1)), False)
  keep |= vertical & (mag > nb(-1, 0)) & (mag >= nb(1, 0))
  keep |= diagonal & s_pos & (mag > nb(-1, -1)) & (mag > nb(1, 1))
  keep |= diagonal & ~s_pos & (mag > nb(-1, 1)) & (mag > nb(1, -1))
  candidate = keep & (mag > int(np.floor(low)))
  strong = candidate & (mag > int(np.floor(high)))
  structure = np.zeros((3, 3, 3), bool)
  structure[1] = True  # 8-connected within an image, never across the batch
  labels, _ = ndimage.label(candidate, structure)
  strong_labels = np.unique(labels[strong])
  edges = np.isin(labels, strong_labels[strong_labels > 0])
  return np.where(edges, 255, 0).astype(np.uint8)


# distanceTransform(DIST_L2, 5): chamfer 5x5 with a = 1, b = 1.4, c = 2.1969, in float32 as
# OpenCV 4 computes it.
_DIST_A, _DIST_B, _DIST_C = np.float32(1.0), np.float32(1.4), np.float32(2.1969)
_DIST_INIT = np.float32(1e20)
_FORWARD = (
    (-2, -1, _DIST_C),
    (-2, 1, _DIST_C),
    (-1, -2, _DIST_C),
    (-1, -1, _DIST_B),
    (-1, 0, _DIST_A),
    (-1, 1, _DIST_B),
    (-1, 2, _DIST_C),
    (0, -1, _DIST_A),
)
_BACKWARD = tuple((-r, -c, w) for r, c, w in _FORWARD)


def distance_transform_l2_5(images: np.ndarray) -> np.ndarray:
  """cv2.distanceTransform(img, DIST_L2, 5) on (B, H, W): distance to the nearest 0 pixel."""
  batch, height, width = images.shape
  tmp = np.full((batch, height + 4, width + 4), _DIST_INIT, np.float32)
  zero = images == 0
  for i in range(height):
    for j in range(width):
      t = np.full(batch, _DIST_INIT, np.float32)
      for r, c, w in _FORWARD:
        t = np.minimum(t, tmp[:, i + 2 + r, j + 2 + c] + w)
      tmp[:, i + 2, j + 2] = np.where(zero[:, i, j], np.float32(0), t)
  for i in range(height - 1, -1, -1):
    for j in range(width - 1, -1, -1):
      t = tmp[:, i + 2, j + 2]
      for r, c, w in _BACKWARD:
        t = np.minimum(t, tmp[:, i + 2 + r, j + 2 + c] + w)
      tmp[:, i + 2, j + 2] = t
  return tmp[:, 2:-2, 2:-2].copy()


def equalize_hist(images: np.ndarray) -> np.ndarray:
  """cv2.equalizeHist on uint8 (B, H, W)."""
  out = np.empty_like(images)
  for k, image in enumerate(images):
    hist = np.bincount(image.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    total = image.size
    if hist[first] == total:
      out[k] = first
      continue
    scale = np.float32(255.0) / np.float32(total - hist[first])
    lut = np.zeros(256, np.uint8)
    cumulative = np.cumsum(hist[first + 1 :])
    lut[first + 1 :] = np.clip(np.rint(cumulative.astype(np.float32) * scale), 0, 255)
    out[k] = lut[image]
  return out
