"""A deterministic, learnable 10-class set of 32x32 RGB images, generated from a seed.

Each class has a prototype: a smooth random colour field (a 4x4 grid upsampled to 32x32). An
image is its class prototype, shifted by up to 3 pixels, plus a smooth random field of another
draw (so classes overlap and accuracy stays below 100%) and pixel noise. Generated with numpy's
PCG64, so the same seed gives the same bytes on every machine.
"""

from __future__ import annotations

import numpy as np

from nkd.data.dataset import Dataset

IMAGE_SIZE = 32


def _smooth_fields(rng: np.random.Generator, n: int, grid: int = 4) -> np.ndarray:
  coarse = rng.uniform(-1.0, 1.0, size=(n, grid, grid, 3))
  reps = IMAGE_SIZE // grid
  fine = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)
  # A 2-tap box blur twice, to take the edges off the upsampled blocks.
  for axis in (1, 2):
    for _ in range(2):
      fine = 0.5 * (fine + np.roll(fine, 1, axis=axis))
  return fine


def make_synthetic(
    seed: int, num_train: int, num_test: int, num_classes: int = 10, *, noise: float = 1.2
) -> Dataset:
  rng = np.random.Generator(np.random.PCG64(seed))
  prototypes = _smooth_fields(rng, num_classes)

  def draw(n):
    labels = rng.integers(0, num_classes, size=n)
    shifts = rng.integers(-3, 4, size=(n, 2))
    images = prototypes[labels]
    images = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(images, shifts)])
    images = images + noise * _smooth_fields(rng, n) + 0.1 * rng.normal(size=images.shape)
    pixels = np.clip(0.5 + 0.35 * images, 0.0, 1.0)
    return (pixels * 255).round().astype(np.uint8), labels.astype(np.int32)

  train_images, train_labels = draw(num_train)
  test_images, test_labels = draw(num_test)
  return Dataset(
      train_images,
      train_labels,
      test_images,
      test_labels,
      None,
      None,
      num_classes,
      f"synthetic(seed={seed})",
  )
