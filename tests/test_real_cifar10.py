"""On the real CIFAR-10 (JPEG copy in ../shared, skipped where absent): the official-format
loader reads it, and a small WRN learns well above chance in a few hundred steps.

The run trains on one device, not on the test process's 4 fake CPU devices: XLA runs in-process
all-reduces by rendezvous of the devices' programs, which share the intra-op pool (2 threads on
a 2-core CI machine); under load (the other test worker) two devices' programs can hold both
threads waiting in an all-reduce while the other two never get one, and after 40 s XLA aborts
the process ("Termination timeout ... Expected 4 threads to join the rendezvous, but only 2 of
them arrived"). Measured: a 4-device train step in a loop beside a CPU hog aborted so within a
few steps, with XLA's convolutions and with nkd's kernels alike. This test's 250 steps made it
the one that crashed a worker now and then. Sharding is tested in test_sharding.py (3 steps)."""

import numpy as np

from nkd.data import cifar10, load_dataset
from nkd.pipeline import train_and_evaluate
from nkd.training import loop

from helpers import mesh_of, tiny_config


def test_small_wrn_learns_real_cifar10(cifar10_official, tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "make_mesh", lambda: mesh_of(1))
  data = cifar10.load_cifar10(
      str(cifar10_official), cache_dir=str(tmp_path / "cache"), download=False
  )
  assert data.train_images.shape == (50000, 32, 32, 3) and data.test_images.shape[0] == 10000
  assert np.bincount(data.test_labels).tolist() == [1000] * 10
  config = tiny_config(
      tmp_path,
      dataset="cifar10",
      data_dir=str(cifar10_official),
      train_subset=8000,
      batch_size=64,
      epochs=2,
      lr=0.05,
      log_every=50,
  )
  # 250 steps on real images, 10,000 real test images.
  results = train_and_evaluate(config, load_dataset(config))
  assert results.test_accuracy > 30, results  # Chance is 10%.
