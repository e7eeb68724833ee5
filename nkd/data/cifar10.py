"""CIFAR-10 from the official Python format, its tarball, TFDS, or a download.

Search order for `source="auto"` in `data_dir`:
  1. `cifar-10-batches-py/` (or `data_dir` itself holding `data_batch_1`): read directly;
  2. `cifar-10-python.tar.gz`: md5-checked, decoded once and cached as .npz in `cache_dir`;
  3. TFDS `cifar10`, if tensorflow-datasets is installed and the set is prepared in `data_dir`;
  4. a download of the tarball into `data_dir` (if `download`), md5-checked.
Otherwise a `DataError` says which file to put where.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np
from absl import logging

from nkd import fileio
from nkd.data import safe_pickle
from nkd.data.dataset import Dataset
from nkd.errors import DataError, import_failure

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_HELP = (
    f"put the official {TARBALL} (md5 {TARBALL_MD5}, from {URL}) or its extracted "
    f"{FOLDER}/ folder in --data_dir"
)


def decode_batch(blob: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  """One pickled batch -> (uint8 NHWC images, int32 labels). The pickle may hold only numpy
  arrays and plain data (nkd.data.safe_pickle): anything else is refused, never run."""
  try:
    batch = safe_pickle.loads(blob, name, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int32)
  except DataError:
    raise
  except Exception as e:  # pickle raises many kinds of errors on corrupt input.
    raise DataError(f"{name}: not a CIFAR-10 batch ({type(e).__name__}: {e}); {_HELP}") from None
  if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
    raise DataError(
        f"{name}: expected data of shape (N, 3072) with N labels, got "
        f"{data.shape} and {labels.shape}"
    )
  if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
    raise DataError(f"{name}: labels outside 0..9")
  # Rows hold the R, G, then B planes of a 32x32 image, row-major.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _assemble(read) -> Dataset:
  parts = [read(name) for name in TRAIN_BATCHES]
  test_images, test_labels = read(TEST_BATCH)
  return Dataset(
      np.concatenate([p[0] for p in parts]),
      np.concatenate([p[1] for p in parts]),
      test_images,
      test_labels,
      None,
      None,
      10,
      "",
  )


def load_python_folder(folder: str) -> Dataset:
  def read(name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise DataError(f"{path} is missing; {_HELP}")
    with open(path, "rb") as f:
      return decode_batch(f.read(), path)

  return _assemble(read)._replace(source=f"cifar10 python folder {folder}")


def load_tarball(path: str, cache_dir: str, *, expected_md5: str = TARBALL_MD5) -> Dataset:
  """Reads the official tarball (md5-checked), caching the decoded arrays."""
  digest = fileio.file_digest(path, "md5")
  if digest != expected_md5:
    raise DataError(
        f"{path}: md5 {digest} does not match the official {expected_md5}: the file "
        f"is corrupt or incomplete; delete it and {_HELP}"
    )
  cache = os.path.join(cache_dir, f"cifar10_{digest}.npz")
  if os.path.isfile(cache):
    with np.load(cache) as z:
      return Dataset(
          z["train_images"],
          z["train_labels"],
          z["test_images"],
          z["test_labels"],
          None,
          None,
          10,
          f"cifar10 tarball {path}",
      )
  with tarfile.open(path, "r:gz") as tar:
    members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}

    def read(name):
      if name not in members:
        raise DataError(f"{path}: no {FOLDER}/{name} inside; {_HELP}")
      return decode_batch(tar.extractfile(members[name]).read(), f"{path}:{name}")

    data = _assemble(read)
  # Atomic: a concurrent run never sees half a cache.
  fileio.save_npz(
      cache,
      train_images=data.train_images,
      train_labels=data.train_labels,
      test_images=data.test_images,
      test_labels=data.test_labels,
  )
  return data._replace(source=f"cifar10 tarball {path}")


def load_tfds(data_dir: str, source: str = "tfds") -> Dataset:
  """TFDS `cifar10`, prepared in `data_dir` (array_record format; no TensorFlow needed)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    found = "" if source == "tfds" else f" found a TFDS cifar10 in --data_dir={data_dir} and"
    why = import_failure(e, "tensorflow_datasets")
    raise DataError(
        f"--data_source={source}{found} needs tensorflow-datasets, which {why}: "
        f"pip install tensorflow-datasets"
    ) from None
  try:
    arrays = {}
    for split in ("train", "test"):
      source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=False)
      items = [source[i] for i in range(len(source))]
      arrays[split] = (
          np.stack([it["image"] for it in items]).astype(np.uint8),
          np.asarray([it["label"] for it in items], np.int32),
      )
  except Exception as e:  # TFDS raises assorted errors for absent or unprepared data.
    raise DataError(
        f"TFDS cifar10 could not be loaded from --data_dir={data_dir} "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
        f"{_HELP}"
    ) from None
  return Dataset(*arrays["train"], *arrays["test"], None, None, 10, f"tfds cifar10 {data_dir}")


def download_tarball(data_dir: str, *, url: str = URL, timeout_s: float = 30.0) -> str:
  """Downloads the tarball into data_dir, md5-checked; returns its path."""
  dest = os.path.join(data_dir, TARBALL)
  logging.info("Downloading %s to %s", url, dest)
  try:
    fileio.download(url, dest, md5=TARBALL_MD5, timeout_s=timeout_s)
  except fileio.ChecksumError:
    raise DataError(
        f"the download from {url} has the wrong md5 (expected {TARBALL_MD5}); " f"{_HELP}"
    ) from None
  except OSError as e:
    raise DataError(
        f"CIFAR-10 is not in --data_dir={data_dir} and the download from {url} "
        f"failed ({e}); {_HELP}"
    ) from None
  return dest


def _tfds_prepared(data_dir: str) -> bool:
  return os.path.isdir(os.path.join(data_dir, "cifar10"))


def load_cifar10(
    data_dir: str, *, cache_dir: str, source: str = "auto", download: bool = True
) -> Dataset:
  folder = os.path.join(data_dir, FOLDER)
  if not os.path.isdir(folder) and os.path.isfile(os.path.join(data_dir, TRAIN_BATCHES[0])):
    folder = data_dir
  tarball = os.path.join(data_dir, TARBALL)
  if source == "tfds":
    return load_tfds(data_dir)
  if os.path.isdir(folder):
    return load_python_folder(folder)
  if os.path.isfile(tarball):
    return load_tarball(tarball, cache_dir)
  if source == "auto" and _tfds_prepared(data_dir):
    return load_tfds(data_dir, source)
  if download:
    return load_tarball(download_tarball(data_dir), cache_dir)
  raise DataError(f"CIFAR-10 not found in --data_dir={data_dir} (and --nodownload); {_HELP}")
