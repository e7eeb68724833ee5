"""On the real CIFAR-10 (JPEG copy in ../shared, skipped where absent): the official-format
loader reads it, and a small WRN learns well above chance in a few hundred steps."""

import subprocess
import sys

import numpy as np

from nkd.data import cifar10, load_dataset
from nkd.pipeline import train_and_evaluate

from helpers import tiny_config


def test_small_wrn_learns_real_cifar10(cifar10_shared, tmp_path):
  subprocess.run(
      [sys.executable, str(cifar10_shared / "make_cifar10_python.py"), str(tmp_path / "data")],
      check=True,
      capture_output=True,
  )
  data = cifar10.load_cifar10(
      str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), download=False
  )
  assert data.train_images.shape == (50000, 32, 32, 3) and data.test_images.shape[0] == 10000
  assert np.bincount(data.test_labels).tolist() == [1000] * 10
  config = tiny_config(
      tmp_path,
      dataset="cifar10",
      data_dir=str(tmp_path / "data"),
      train_subset=8000,
      batch_size=64,
      epochs=2,
      lr=0.05,
      log_every=50,
  )
  # 250 steps on real images, 10,000 real test images.
  results = train_and_evaluate(config, load_dataset(config))
  assert results.test_accuracy > 30, results  # Chance is 10%.
