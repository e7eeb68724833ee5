"""The `Dataset` container and the one entry point that builds it from a config."""

from __future__ import annotations

import hashlib
import os
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


def load_dataset(config) -> Dataset:
  """Loads `config.dataset`, then applies --train_subset and --validation_size."""
  from nkd.data import cifar10, synthetic  # pylint: disable=g-import-not-at-top
  if config.dataset == "synthetic":
    data = synthetic.make_synthetic(config.synthetic_seed, config.synthetic_train_size,
                                    config.synthetic_test_size)
  else:
    data = cifar10.load_cifar10(config.data_dir, source=config.data_source,
                                download=config.download,
                                cache_dir=os.path.join(config.workspace, "cache"))
  return split(data, train_subset=config.train_subset, validation_size=config.validation_size)


def split(data: Dataset, *, train_subset: int, validation_size: int) -> Dataset:
  images, labels = data.train_images, data.train_labels
  if train_subset:
    if train_subset > len(images):
      raise ConfigError(f"--train_subset={train_subset}: the training set has only "
                        f"{len(images)} images")
    images, labels = images[:train_subset], labels[:train_subset]
  val_images = val_labels = None
  if validation_size:
    if validation_size >= len(images):
      raise ConfigError(f"--validation_size={validation_size}: expected fewer than the "
                        f"{len(images)} training images")
    val_images, val_labels = images[-validation_size:], labels[-validation_size:]
    images, labels = images[:-validation_size], labels[:-validation_size]
  return data._replace(train_images=images, train_labels=labels, val_images=val_images,
                       val_labels=val_labels)
