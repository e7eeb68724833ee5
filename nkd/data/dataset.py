"""The `Dataset` container and the train/validation split."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from nkd.errors import ConfigError


class Dataset(NamedTuple):
  """Whole splits as host arrays: images uint8 (N, 32, 32, 3), labels int32 (N,)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  val_images: np.ndarray | None
  val_labels: np.ndarray | None
  num_classes: int
  source: str

  def fingerprint(self) -> str:
    """sha256 of the training and test data, to tell data sets apart in config.json."""
    h = hashlib.sha256()
    for a in (self.train_images, self.train_labels, self.test_images, self.test_labels):
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def split(data: Dataset, *, train_subset: int, validation_size: int) -> Dataset:
  images, labels = data.train_images, data.train_labels
  if train_subset:
    if train_subset > len(images):
      raise ConfigError(
          f"--train_subset={train_subset}: the training set has only " f"{len(images)} images"
      )
    images, labels = images[:train_subset], labels[:train_subset]
  val_images = val_labels = None
  if validation_size:
    if validation_size >= len(images):
      raise ConfigError(
          f"--validation_size={validation_size}: expected fewer than the "
          f"{len(images)} training images"
      )
    val_images, val_labels = images[-validation_size:], labels[-validation_size:]
    images, labels = images[:-validation_size], labels[:-validation_size]
  return data._replace(
      train_images=images, train_labels=labels, val_images=val_images, val_labels=val_labels
  )
