"""CINIC-10 (Darlow et al., 2018), ImageNet-derived test images: read, cache, evaluate.

Only DIR/test/<class>/*.png without "cifar" in the name are read (the split also holds CIFAR-10
images, some from its training set); decoded once, cached as .npz keyed by the file list. No
checksum is published for CINIC-10.tar.gz, so a download records its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile

import numpy as np
from absl import logging
from PIL import Image

from nkd import fileio
from nkd.errors import DataError
from nkd.evaluation import batching, predict
from nkd.evaluation.evaluator import EvalData, Model
from nkd.evaluation.predict import ApplyFn

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CINIC_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
PUBLISHED_SHA256 = None  # none published; see the module docstring
SELECTION = "ImageNet-derived test images only (file names without 'cifar')"


def _image_files(test_dir: str) -> list[tuple[str, int]]:
  files = []
  for label, name in enumerate(CLASSES):
    folder = os.path.join(test_dir, name)
    if not os.path.isdir(folder):
      raise DataError(
          f"CINIC-10 class folder {folder} is missing: expected test/<class>/ for "
          f"each of {CLASSES}"
      )
    files += [
        (os.path.join(folder, f), label)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(".png") and "cifar" not in f.lower()
    ]
  return files


def _read_rgb32(path: str) -> np.ndarray:
  with Image.open(path) as image:
    rgb = image.convert("RGB")  # grayscale, palette and RGBA (alpha dropped) -> RGB
    if rgb.size != (32, 32):
      rgb = rgb.resize((32, 32), Image.Resampling.BICUBIC)
    return np.asarray(rgb, np.uint8)


def load_cinic_test(
    cinic_dir: str, cache_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
  """(images uint8 (N, 32, 32, 3), labels int32 (N,), info) from DIR/test; cached as .npz.

  FileNotFoundError if DIR/test does not exist; ValueError for a missing class folder.
  """
  test_dir = os.path.join(cinic_dir, "test")
  if not os.path.isdir(test_dir):
    raise FileNotFoundError(f"no CINIC-10 test split at {test_dir}")
  files = _image_files(test_dir)
  if not files:
    raise DataError(f"CINIC-10 test split {test_dir} holds no ImageNet-derived PNG files")
  listing = hashlib.sha256(
      "\n".join(
          f"{os.path.relpath(p, test_dir)}:{os.path.getsize(p)}:{label}" for p, label in files
      ).encode()
  ).hexdigest()
  info = {
      "dir": os.path.abspath(cinic_dir),
      "selection": SELECTION,
      "num_images": len(files),
      "files_sha256": listing,
  }
  cache_path = None
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
    cache_path = os.path.join(cache_dir, f"cinic10_test_imagenet_{listing[:16]}.npz")
    if os.path.isfile(cache_path):
      with np.load(cache_path) as cached:
        info["cache"] = cache_path
        return cached["images"], cached["labels"], info
  logging.info("Reading %d CINIC-10 ImageNet test images from %s", len(files), test_dir)
  images = np.stack([_read_rgb32(p) for p, _ in files])
  labels = np.array([label for _, label in files], np.int32)
  if cache_path:
    fileio.save_npz(cache_path, images=images, labels=labels)
    info["cache"] = cache_path
  return images, labels, info


def download_cinic(dest_dir: str, *, url: str = CINIC_URL, timeout_s: float = 30.0) -> dict:
  """Downloads the archive into dest_dir and extracts its test split; returns what it did.

  Raises OSError (URLError, timeouts, ...) when offline. The archive's sha256 is computed while
  streaming and written beside it; it is checked against PUBLISHED_SHA256 when one is known.
  """
  os.makedirs(dest_dir, exist_ok=True)
  archive = os.path.join(dest_dir, "CINIC-10.tar.gz")
  digest_path = archive + ".sha256"
  if not os.path.isfile(archive):
    logging.info("Downloading CINIC-10 from %s", url)
    digest = fileio.download(url, archive, sha256=PUBLISHED_SHA256, timeout_s=timeout_s)["sha256"]
  elif os.path.isfile(digest_path):
    with open(digest_path) as f:
      digest = f.read().strip()
  else:  # an archive put there by hand
    digest = fileio.file_digest(archive, "sha256")
  if not os.path.isfile(digest_path):
    with fileio.atomic_write(digest_path) as f:
      f.write(digest + "\n")
  fileio.check_digest(archive, "sha256", digest, PUBLISHED_SHA256, source="published")
  root = _find_split_root(dest_dir)
  if root is None:
    with tarfile.open(archive, "r:gz") as tar:  # only the test split: 1/3 of the archive
      members = [
          m for m in tar.getmembers() if "test" in os.path.normpath(m.name).split(os.sep)[:2]
      ]
      tar.extractall(dest_dir, members=members, filter="data")
    root = _find_split_root(dest_dir)
    if root is None:
      raise tarfile.TarError(f"{archive} holds no test/ folder")
  return {
      "cinic_dir": root,
      "url": url,
      "archive": archive,
      "archive_sha256": digest,
      "published_sha256": PUBLISHED_SHA256,
  }


def _find_split_root(dest_dir: str) -> str | None:
  """dest_dir or its one subfolder (the archive's top folder, if any) that holds test/."""
  if os.path.isdir(os.path.join(dest_dir, "test")):
    return dest_dir
  for entry in sorted(os.listdir(dest_dir)):
    if os.path.isdir(os.path.join(dest_dir, entry, "test")):
      return os.path.join(dest_dir, entry)
  return None


def evaluate_cinic(
    apply_fn: ApplyFn,
    variables,
    cinic_dir: str | None,
    cache_dir: str | None,
    batch_size: int = 1000,
    *,
    download: bool = False,
    url: str = CINIC_URL,
    timeout_s: float = 30.0,
) -> dict:
  """Accuracy (percent) on CINIC-10's ImageNet-derived test images, or a reasoned skip.

  Returns {"status": "ok", "accuracy", "num_images", "source": {...}} or
  {"status": "skipped", "reason"} when the data is absent and cannot be downloaded. A present but
  malformed folder raises ValueError rather than being skipped.
  """
  batching.check_batch_size(batch_size)
  source_extra = {}
  have = bool(cinic_dir) and os.path.isdir(os.path.join(cinic_dir, "test"))
  if not have:
    where = f"at {cinic_dir}" if cinic_dir else "(no --cinic_dir given)"
    if not download:
      return {
          "status": "skipped",
          "reason": f"CINIC-10 test split not found {where} and download is off",
      }
    if not cache_dir:
      return {
          "status": "skipped",
          "reason": f"CINIC-10 test split not found {where} and no cache folder to "
          "download into",
      }
    dest = os.path.join(cache_dir, "cinic10")
    try:
      source_extra = download_cinic(dest, url=url, timeout_s=timeout_s)
    except (OSError, tarfile.TarError, EOFError) as e:
      shutil.rmtree(os.path.join(dest, "test"), ignore_errors=True)
      return {
          "status": "skipped",
          "reason": f"CINIC-10 test split not found {where} and download from {url} "
          f"failed: {type(e).__name__}: {e}",
      }
    cinic_dir = source_extra.pop("cinic_dir")
  images, labels, info = load_cinic_test(cinic_dir, cache_dir)
  correct = predict.count_correct(apply_fn, variables, images, labels, batch_size)
  result = {
      "status": "ok",
      "accuracy": 100.0 * correct / len(labels),
      "num_images": int(len(labels)),
      "source": {**info, **source_extra},
  }
  logging.info(
      "CINIC-10 ImageNet test: %.2f%% of %d (%s)",
      result["accuracy"],
      len(labels),
      json.dumps(result["source"]),
  )
  return result


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "cinic_imagenet" section: --cinic_dir, else (with --cinic_download) a download
  into the cache folder, else a reasoned skip."""
  section = evaluate_cinic(
      model.apply_fn,
      model.variables,
      options.cinic_dir or None,
      data.cache_dir,
      options.eval_batch_size,
      download=options.cinic_download,
  )
  if section["status"] != "ok":
    logging.warning("CINIC-10 skipped: %s", section["reason"])
  return section
