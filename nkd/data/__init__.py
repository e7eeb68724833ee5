"""Data: CIFAR-10 (official Python format, tarball, TFDS, download), a synthetic set, and
on-device augmentation. A data set is a `Dataset` of uint8 NHWC images and int32 labels."""

from __future__ import annotations

import os

from nkd.data import cifar10, synthetic
from nkd.data.dataset import Dataset, split

__all__ = ["Dataset", "load_dataset"]


def load_dataset(config) -> Dataset:
  """Loads `config.dataset`, then applies --train_subset and --validation_size."""
  if config.dataset == "synthetic":
    data = synthetic.make_synthetic(
        config.synthetic_seed, config.synthetic_train_size, config.synthetic_test_size
    )
  else:
    data = cifar10.load_cifar10(
        config.data_dir,
        source=config.data_source,
        download=config.download,
        cache_dir=os.path.join(config.workspace, "cache"),
    )
  return split(data, train_subset=config.train_subset, validation_size=config.validation_size)
