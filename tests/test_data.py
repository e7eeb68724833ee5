"""CIFAR-10 loaders on fixtures written in the official Python format, and the synthetic set."""

import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest

from nkd.data import cifar10, synthetic
from nkd.data.dataset import split
from nkd.errors import ConfigError, DataError

PER_BATCH = 12


def write_official_folder(root, seed=0):
  """Writes cifar-10-batches-py/ with PER_BATCH images per batch, pickled as the original."""
  rng = np.random.default_rng(seed)
  folder = os.path.join(root, cifar10.FOLDER)
  os.makedirs(folder)
  truth = {}
  for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
    images = rng.integers(0, 256, (PER_BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, PER_BATCH).tolist()
    data = images.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)  # R, G, B planes.
    with open(os.path.join(folder, name), "wb") as f:
      pickle.dump(
          {
              b"batch_label": name.encode(),
              b"labels": labels,
              b"data": data,
              b"filenames": [b"x.png"] * PER_BATCH,
          },
          f,
          protocol=2,
      )
    truth[name] = (images, np.asarray(labels, np.int32))
  with open(os.path.join(folder, "batches.meta"), "wb") as f:
    pickle.dump({b"label_names": [b"airplane"] * 10}, f)
  return folder, truth


def write_tarball(root, folder):
  path = os.path.join(root, cifar10.TARBALL)
  with tarfile.open(path, "w:gz") as tar:
    tar.add(folder, arcname=cifar10.FOLDER)
  return path


def _check(data, truth):
  np.testing.assert_array_equal(
      data.train_images, np.concatenate([truth[n][0] for n in cifar10.TRAIN_BATCHES])
  )
  np.testing.assert_array_equal(
      data.train_labels, np.concatenate([truth[n][1] for n in cifar10.TRAIN_BATCHES])
  )
  np.testing.assert_array_equal(data.test_images, truth[cifar10.TEST_BATCH][0])
  np.testing.assert_array_equal(data.test_labels, truth[cifar10.TEST_BATCH][1])
  assert data.train_images.dtype == np.uint8 and data.train_images.shape[1:] == (32, 32, 3)


def test_official_python_folder(tmp_path):
  _, truth = write_official_folder(tmp_path)
  data = cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"), download=False)
  _check(data, truth)


def test_tarball_is_md5_checked_decoded_and_cached(tmp_path):
  folder, truth = write_official_folder(tmp_path / "src")
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  tarball = write_tarball(str(data_dir), folder)
  md5 = hashlib.md5(open(tarball, "rb").read()).hexdigest()
  cache = tmp_path / "cache"
  _check(cifar10.load_tarball(tarball, str(cache), expected_md5=md5), truth)
  assert os.path.exists(cache / f"cifar10_{md5}.npz")
  _check(cifar10.load_tarball(tarball, str(cache), expected_md5=md5), truth)  # From the cache.
  # Through the public loader the official md5 is required: a different file is refused.
  with pytest.raises(DataError, match="md5"):
    cifar10.load_cifar10(str(data_dir), cache_dir=str(cache), download=False)


def test_missing_data_names_the_file_to_put_where(tmp_path):
  with pytest.raises(DataError, match="cifar-10-python.tar.gz.*--data_dir"):
    cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "c"), download=False)


def test_offline_download_fails_with_a_clear_message(tmp_path):
  with pytest.raises(DataError, match="download .* failed.*cifar-10-python.tar.gz"):
    cifar10.download_tarball(str(tmp_path), url="http://127.0.0.1:9/cifar.tar.gz", timeout_s=2)
  assert not os.listdir(tmp_path)  # No partial file left behind.


def test_download_with_the_wrong_md5_is_refused(tmp_path):
  served = tmp_path / "served.tar.gz"
  served.write_bytes(b"not the CIFAR-10 tarball")
  data_dir = tmp_path / "data"
  with pytest.raises(DataError, match="download from .*served.tar.gz has the wrong md5"):
    cifar10.download_tarball(str(data_dir), url=served.as_uri())
  assert not os.listdir(data_dir)  # Neither the tarball nor its .part.


def test_corrupt_batch_is_named(tmp_path):
  folder, _ = write_official_folder(tmp_path)
  with open(os.path.join(folder, "data_batch_3"), "wb") as f:
    f.write(b"not a pickle")
  with pytest.raises(DataError, match="data_batch_3"):
    cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "c"), download=False)


def test_synthetic_is_deterministic_and_balanced():
  a = synthetic.make_synthetic(0, 500, 100)
  b = synthetic.make_synthetic(0, 500, 100)
  c = synthetic.make_synthetic(1, 500, 100)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert not np.array_equal(a.train_images, c.train_images)
  assert a.train_images.shape == (500, 32, 32, 3) and a.train_images.dtype == np.uint8
  assert np.bincount(a.train_labels, minlength=10).min() > 20


def test_validation_split_and_subset():
  data = synthetic.make_synthetic(0, 100, 10)
  out = split(data, train_subset=60, validation_size=10)
  assert len(out.train_images) == 50 and len(out.val_images) == 10
  np.testing.assert_array_equal(out.val_images, data.train_images[50:60])
  with pytest.raises(ConfigError, match="--validation_size"):
    split(data, train_subset=0, validation_size=100)


def test_tfds_source_reads_a_prepared_cifar10(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=20):  # Stands in for a prepared data_dir.
    data = cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "c"), source="tfds")
  assert data.train_images.shape == (20, 32, 32, 3) and data.train_images.dtype == np.uint8
  assert data.test_labels.shape == (20,) and data.test_labels.dtype == np.int32
  assert data.source.startswith("tfds")


def test_tfds_source_without_prepared_data_is_a_clear_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(DataError, match="TFDS cifar10 could not be loaded"):
    cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "c"), source="tfds")
