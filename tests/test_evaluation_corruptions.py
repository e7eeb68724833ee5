"""Regenerated CIFAR-10-C corruptions and the image operations they re-derive.

The golden hashes below were computed with OpenCV 4.14 and ImageMagick 6.9.11 Q16 on the same
inputs, so these tests pin our numpy re-derivations to those libraries without needing them.
"""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from nkd.evaluation import cifar10c
from nkd.evaluation.cifar10c import generate as C
from nkd.evaluation.cifar10c import image_ops as ops


def _sha(array) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _textured(n: int, seed: int = 0) -> np.ndarray:
  """Smooth coloured textures plus a little noise: blur and noise both change them visibly."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:32, 0:32] / 32
  images = []
  for _ in range(n):
    a, p = rng.uniform(0, 6, 3), rng.uniform(0, 6, 3)
    images.append(
        np.stack(
            [0.5 + 0.3 * np.sin(a[c] * 6 * xx + p[c]) * np.cos(a[c] * 4 * yy) for c in range(3)], -1
        )
    )
  images = np.stack(images) + rng.normal(0, 0.03, (n, 32, 32, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images():
  return _textured(24)


@pytest.fixture(scope="module")
def frost_dir(tmp_path_factory):
  """Stand-ins for make_cifar_c's frost photographs (same names, large enough to crop)."""
  folder = tmp_path_factory.mktemp("frost")
  rng = np.random.default_rng(3)
  for i, name in enumerate(C.FROST_FILES):
    img = rng.integers(0, 256, (200 + 5 * i, 210 + 3 * i, 3), dtype=np.uint8)
    Image.fromarray(img).save(folder / name)
  return str(folder)


def _distortion(name, images, severity, frost_images=None):
  out = C.corrupt(
      name, images, severity, rng=np.random.default_rng([1, severity]), frost_images=frost_images
  )
  assert out.shape == images.shape and out.dtype == np.uint8, name
  return float(np.mean(np.abs(out.astype(np.float64) - images)))


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_each_corruption_changes_the_image_and_keeps_shape_and_dtype(name, images, frost_dir):
  frost_images = C.load_frost_images(frost_dir) if name == "frost" else None
  for severity in C.SEVERITIES:
    assert _distortion(name, images, severity, frost_images) > 0.5, (name, severity)


# Corruptions whose official constants grow with severity at every step.
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "zoom_blur",
    "fog",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)
# Constants that grow overall but not at every step (motion blur 3 -> 4 only lengthens a kernel
# whose extra taps weigh ~1e-8; snow and glass blur change several constants at once).
GROWS_OVERALL = ("motion_blur", "snow", "glass_blur")


@pytest.mark.parametrize("name", MONOTONE)
def test_distortion_grows_with_severity(name, images):
  d = [_distortion(name, images, s) for s in C.SEVERITIES]
  assert all(a < b for a, b in zip(d, d[1:])), (name, d)


@pytest.mark.parametrize("name", GROWS_OVERALL)
def test_distortion_grows_from_severity_1_to_5(name, images):
  assert _distortion(name, images, 1) < _distortion(name, images, 5)


def test_corruption_is_deterministic_given_the_generator(images):
  for name in ("gaussian_noise", "glass_blur", "spatter", "elastic_transform"):
    a = C.corrupt(name, images[:4], 3, rng=np.random.default_rng(5))
    b = C.corrupt(name, images[:4], 3, rng=np.random.default_rng(5))
    c = C.corrupt(name, images[:4], 3, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c), name


def test_bad_input_and_unknown_names_raise(images):
  with pytest.raises(ValueError, match="unknown corruption"):
    C.corrupt("rain", images, 1, rng=np.random.default_rng(0))
  with pytest.raises(ValueError, match="uint8"):
    C.corrupt("fog", images.astype(np.float32), 1, rng=np.random.default_rng(0))
  with pytest.raises(ValueError, match="severity"):
    C.corrupt("fog", images, 6, rng=np.random.default_rng(0))
  with pytest.raises(ValueError, match="frost"):
    C.corrupt("frost", images, 1, rng=np.random.default_rng(0))


# ----- image operations against the libraries they replace ------------------------------------


def test_zoom_matches_scipy_including_its_edge_rule():
  rng = np.random.default_rng(0)
  x = rng.random((2, 24, 24, 3)).astype(np.float32)
  for factor in (1.06, 1.25, 1.75, 2.25):  # 1.75 puts the last coordinate past the edge
    expected = np.stack([ndimage.zoom(x[b], (factor, factor, 1), order=1) for b in range(2)])
    np.testing.assert_allclose(ops.zoom_linear(x, factor), expected, atol=1e-6)


def test_hsv_round_trip_and_known_values():
  rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.2]]])
  hsv = ops.rgb2hsv(rgb)
  np.testing.assert_allclose(hsv[0, 0], [0.0, 1.0, 1.0])
  np.testing.assert_allclose(hsv[0, 1], [0.5, 1.0, 0.5])
  np.testing.assert_allclose(hsv[0, 2], [0.0, 0.0, 0.2])
  x = np.random.default_rng(1).random((4, 8, 8, 3))
  np.testing.assert_allclose(ops.hsv2rgb(ops.rgb2hsv(x)), x, atol=1e-12)


def _canny_input():
  rng = np.random.default_rng(1234)
  coarse = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
  image = np.kron(coarse, np.ones((1, 4, 4), np.uint8)).astype(np.int64)
  return np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def test_canny_and_distance_transform_match_opencv():
  edges = ops.canny(_canny_input(), 50, 150)
  assert _sha(edges) == "5da19b3949e08e81"  # cv2.Canny(img, 50, 150), OpenCV 4.14
  assert _sha(ops.distance_transform_l2_5(255 - edges)) == "f5fefd67ee9dfb3c"  # DIST_L2, 5


def test_distance_transform_chamfer_weights():
  image = np.full((1, 9, 9), 255, np.uint8)
  image[0, 4, 4] = 0
  d = ops.distance_transform_l2_5(image)[0]
  np.testing.assert_allclose(
      [d[4, 4], d[4, 5], d[5, 5], d[6, 5], d[4, 6]], [0, 1, 1.4, 2.1969, 2], rtol=1e-6
  )


def test_equalize_hist_matches_opencv():
  image = np.random.default_rng(99).integers(0, 21, (4, 32, 32), dtype=np.uint8)
  assert _sha(ops.equalize_hist(image)) == "12bb4fea789330cb"  # cv2.equalizeHist


def test_motion_blur_matches_imagemagick():
  image = np.random.default_rng(7).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  out = ops.motion_blur(image.astype(np.float64), 8, 2, np.array([-30.5, 12.25, -100.0]))
  assert _sha(out.astype(np.uint8)) == "ccee18131db3ab1e"  # convert -motion-blur 8x2+angle


def test_warp_affine_matches_opencv():
  image = np.random.default_rng(5).random((2, 32, 32, 3)).astype(np.float32)
  src = np.float32([[26, 26], [26, 6], [6, 6]])
  dst = src + np.float32(
      [[[1.5, -2.0], [0.25, 2.5], [-1.75, 0.5]], [[-2.5, 1.0], [2.0, -0.5], [0.75, -2.25]]]
  )
  out = ops.warp_affine_reflect101(
      image, ops.affine_from_points(np.broadcast_to(src, dst.shape), dst)
  )
  # cv2.warpAffine(img, cv2.getAffineTransform(src, dst), (32, 32), BORDER_REFLECT_101)
  assert abs(float(out.astype(np.float64).sum()) - 3040.864924020134) < 1e-3
  np.testing.assert_allclose(
      out[0, 0, :4, 0],
      [0.616130530834198, 0.4888353645801544, 0.2136470079421997, 0.4255867600440979],
      atol=1e-6,
  )
  np.testing.assert_allclose(
      out[1, 31, -4:, 2],
      [0.11610663682222366, 0.21628467738628387, 0.4461444020271301, 0.3510608971118927],
      atol=1e-6,
  )


def test_plasma_fractal_spans_zero_to_one():
  m = C.plasma_fractal(np.random.default_rng(0), 3, wibbledecay=2)
  assert m.shape == (3, 32, 32)
  np.testing.assert_allclose(m.min(axis=(1, 2)), 0)
  np.testing.assert_allclose(m.max(axis=(1, 2)), 1)


# ----- regeneration and its cache --------------------------------------------------------------


def test_regenerate_caches_seeds_and_records_missing_frost(tmp_path, images):
  labels = np.arange(len(images)) % 10
  names = ("gaussian_noise", "contrast", "frost")
  data = cifar10c.regenerate_cifar10c(
      images, labels, cache_dir=str(tmp_path), seed=3, corruptions=names
  )
  assert data.source == "regenerated" and data.num_per_severity == len(images)
  assert set(data.images) == {"gaussian_noise", "contrast"}
  assert "frost_dir" in data.missing["frost"]
  assert data.details["seed"] == 3 and "gaussian_noise" in data.details["fidelity"]
  block, block_labels = data.severity("contrast", 2)
  np.testing.assert_array_equal(
      block, C.corrupt("contrast", images, 2, rng=np.random.default_rng(0))
  )
  np.testing.assert_array_equal(block_labels, labels)
  path = os.path.join(data.details["folder"], "gaussian_noise.npy")
  mtime = os.path.getmtime(path)
  again = cifar10c.regenerate_cifar10c(
      images, labels, cache_dir=str(tmp_path), seed=3, corruptions=names
  )
  assert os.path.getmtime(path) == mtime  # read from the cache, not made again
  np.testing.assert_array_equal(again.images["gaussian_noise"], data.images["gaussian_noise"])
  with open(os.path.join(data.details["folder"], "manifest.json")) as f:
    assert json.load(f)["source"] == "regenerated"
  other = cifar10c.regenerate_cifar10c(
      images, labels, cache_dir=str(tmp_path), seed=4, corruptions=("gaussian_noise",)
  )
  assert other.details["folder"] != data.details["folder"]
  assert not np.array_equal(other.images["gaussian_noise"], data.images["gaussian_noise"])


def test_regenerate_makes_only_the_asked_severities_then_the_official_file(tmp_path, images):
  """Asking for severity 5 makes that severity only (`<name>-5.npy`), rows equal to the full
  set's; asking for all five later makes the other four and writes the official file."""
  labels = np.arange(len(images)) % 10
  part = cifar10c.regenerate_cifar10c(
      images, labels, cache_dir=str(tmp_path), seed=3, corruptions=("contrast",), severities=[5]
  )
  folder = part.details["folder"]
  assert sorted(os.listdir(folder)) == ["contrast-5.npy", "labels.npy", "manifest.json"]
  assert part.severities == (5,) and part.images["contrast"].shape == (len(images), 32, 32, 3)
  block, block_labels = part.severity("contrast", 5)
  np.testing.assert_array_equal(block_labels, labels)
  with pytest.raises(ValueError, match="severity 2 was not loaded"):
    part.severity("contrast", 2)
  full = cifar10c.regenerate_cifar10c(
      images, labels, cache_dir=str(tmp_path), seed=3, corruptions=("contrast",)
  )
  assert sorted(os.listdir(folder)) == ["contrast.npy", "labels.npy", "manifest.json"]
  assert full.severities == cifar10c.SEVERITIES
  np.testing.assert_array_equal(full.severity("contrast", 5)[0], block)
  fresh = cifar10c.regenerate_cifar10c(  # made at once in another cache: the same rows
      images, labels, cache_dir=str(tmp_path / "other"), seed=3, corruptions=("contrast",)
  )
  np.testing.assert_array_equal(fresh.images["contrast"], full.images["contrast"])
  again = cifar10c.regenerate_cifar10c(  # a subset of a complete file: read from it
      images, labels, cache_dir=str(tmp_path), seed=3, corruptions=("contrast",), severities=[2, 4]
  )
  assert sorted(os.listdir(folder)) == ["contrast.npy", "labels.npy", "manifest.json"]
  np.testing.assert_array_equal(again.severity("contrast", 4)[0], full.severity("contrast", 4)[0])


def test_regenerate_frost_with_photographs(tmp_path, images, frost_dir):
  data = cifar10c.regenerate_cifar10c(
      images[:5],
      np.zeros(5, int),
      cache_dir=str(tmp_path),
      seed=0,
      corruptions=("frost",),
      frost_dir=frost_dir,
  )
  assert data.images["frost"].shape == (25, 32, 32, 3) and not data.missing


def test_frost_photographs_missing_raise(tmp_path):
  with pytest.raises(ValueError, match="frost1.png"):
    C.load_frost_images(str(tmp_path))
