"""CINIC-10 ImageNet-test reader on a small fixture folder, and the skipped result."""

import hashlib
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nkd.errors import DataError
from nkd.evaluation import cinic


def _classify_by_first_pixel(variables, x):
  del variables
  return jax.nn.one_hot(jnp.round(x[:, 0, 0, 0] * 255).astype(jnp.int32) % 10, 10)


@pytest.fixture
def cinic_dir(tmp_path):
  """test/<class>/: two ImageNet files per class (one grayscale or RGBA, one 40x40 to resize)
  and one 'cifar' file that must be ignored. Pixel (0, 0) red = class index."""
  for label, name in enumerate(cinic.CLASSES):
    folder = tmp_path / "test" / name
    folder.mkdir(parents=True)
    rgb = np.full((32, 32, 3), 100, np.uint8)
    rgb[0, 0] = (label, 7, 9)
    if label % 2:
      Image.fromarray(np.dstack([rgb, np.full((32, 32), 128, np.uint8)]), "RGBA").save(
          folder / f"n0{label}_1.png"
      )
    else:
      gray = np.full((32, 32), label, np.uint8)
      Image.fromarray(gray, "L").save(folder / f"n0{label}_1.png")
    Image.fromarray(np.full((40, 40, 3), label, np.uint8)).save(folder / f"n0{label}_2.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(folder / f"cifar10-train-{label}.png")
  (tmp_path / "train").mkdir()
  return tmp_path


def test_reads_only_imagenet_files_as_rgb(cinic_dir, tmp_path):
  images, labels, info = cinic.load_cinic_test(str(cinic_dir), str(tmp_path / "cache"))
  assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
  assert not np.any(np.all(images == 200, axis=(1, 2, 3)))  # no cifar file read
  gray = images[0]  # class 0, the grayscale file: value replicated to three channels
  np.testing.assert_array_equal(gray, np.zeros((32, 32, 3), np.uint8))
  rgba = images[2]  # class 1, the RGBA file: alpha dropped, colour kept
  np.testing.assert_array_equal(rgba[0, 0], [1, 7, 9])
  np.testing.assert_array_equal(rgba[5, 5], [100, 100, 100])
  resized = images[3]  # class 1, the 40x40 file
  np.testing.assert_array_equal(resized, np.full((32, 32, 3), 1, np.uint8))
  assert info["num_images"] == 20 and "cifar" in info["selection"]
  again = cinic.load_cinic_test(str(cinic_dir), str(tmp_path / "cache"))
  assert "cache" in again[2]
  np.testing.assert_array_equal(again[0], images)


def test_evaluate_ok(cinic_dir, tmp_path):
  result = cinic.evaluate_cinic(
      _classify_by_first_pixel, {}, str(cinic_dir), str(tmp_path / "c"), batch_size=8
  )
  assert result["status"] == "ok" and result["num_images"] == 20
  assert result["accuracy"] == 100.0
  assert result["source"]["dir"] == str(cinic_dir)


def test_missing_class_folder_raises_naming_it(cinic_dir):
  for f in (cinic_dir / "test" / "frog").iterdir():
    f.unlink()
  (cinic_dir / "test" / "frog").rmdir()
  with pytest.raises(DataError, match="frog"):
    cinic.load_cinic_test(str(cinic_dir))


def test_absent_data_is_skipped_with_a_reason(tmp_path):
  result = cinic.evaluate_cinic(
      _classify_by_first_pixel, {}, str(tmp_path / "nowhere"), str(tmp_path / "cache")
  )
  assert result == {"status": "skipped", "reason": result["reason"]}
  assert "nowhere" in result["reason"] and "download is off" in result["reason"]
  # Online download attempted but refused (the discard port on this machine): still a skip.
  result = cinic.evaluate_cinic(
      _classify_by_first_pixel,
      {},
      None,
      str(tmp_path / "cache"),
      download=True,
      url="http://127.0.0.1:9/CINIC-10.tar.gz",
      timeout_s=5,
  )
  assert result["status"] == "skipped"
  assert "download from http://127.0.0.1:9/CINIC-10.tar.gz failed" in result["reason"]


def test_download_records_the_archives_sha256_and_extracts_the_test_split(cinic_dir, tmp_path):
  served = tmp_path / "served" / "CINIC-10.tar.gz"
  served.parent.mkdir()
  with tarfile.open(served, "w:gz") as tar:
    tar.add(cinic_dir / "test", arcname="test")
  cache = tmp_path / "cache"
  result = cinic.evaluate_cinic(
      _classify_by_first_pixel,
      {},
      None,
      str(cache),
      batch_size=8,
      download=True,
      url=served.as_uri(),
  )
  assert result["status"] == "ok" and result["accuracy"] == 100.0
  sha256 = hashlib.sha256(served.read_bytes()).hexdigest()
  assert result["source"]["archive_sha256"] == sha256
  archive = cache / "cinic10" / "CINIC-10.tar.gz"
  assert (cache / "cinic10" / "CINIC-10.tar.gz.sha256").read_text() == sha256 + "\n"
  assert sorted(os.listdir(archive.parent)) == ["CINIC-10.tar.gz", "CINIC-10.tar.gz.sha256", "test"]


def test_a_download_that_differs_from_a_published_sha256_is_refused(tmp_path, monkeypatch):
  served = tmp_path / "CINIC-10.tar.gz"
  served.write_bytes(b"not CINIC-10")
  monkeypatch.setattr(cinic, "PUBLISHED_SHA256", "0" * 64)
  with pytest.raises(
      DataError,
      match=r"download from .*CINIC-10.tar.gz: sha256 \w+ does not " r"match the expected 0+$",
  ):
    cinic.download_cinic(str(tmp_path / "dest"), url=served.as_uri())
  assert not os.listdir(tmp_path / "dest")
