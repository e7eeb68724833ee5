"""Data: CIFAR-10 (official Python format, tarball, TFDS, download), a synthetic set, and
on-device augmentation. A data set is a `Dataset` of uint8 NHWC images and int32 labels."""

from nkd.data.dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
