"""CIFAR-10 in the official Python format from `cifar10_jpeg.npz`, the offline JPEG copy.

The npz holds every image as the bytes of a JPEG file, in the official order:
`train_jpeg`/`test_jpeg` (uint8, the files' bytes concatenated), `train_offsets`/`test_offsets`
(int64, N+1 offsets: image i is `jpeg[off[i]:off[i+1]]`) and `train_label`/`test_label` (uint8).
`write_python_folder` decodes them (Pillow) and writes `OUT/cifar-10-batches-py/` as the
official download has it: `data_batch_1..5` and `test_batch` (pickled dicts of `data`, N x 3072
uint8 in R, G, B planes, and `labels`), and `batches.meta`, so `nkd.data.cifar10` reads it
unchanged (`--data_dir=OUT`). The pixels are JPEG copies: report accuracies on them as
"CIFAR-10 (JPEG copy)".

  python -m benchmarks.cifar10_npz NPZ OUT_DIR
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import os
import pickle
import sys

import numpy as np

from nkd import fileio
from nkd.data import cifar10

LABEL_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCH = 10_000  # images per official batch
SPLITS = ("train", "test")


class NpzError(Exception):
  """The file is not the JPEG copy's npz: one line saying what is wrong."""


def _decode(blobs: list[bytes]) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel  (only the converter needs it)

  out = np.empty((len(blobs), 32, 32, 3), np.uint8)
  for i, blob in enumerate(blobs):
    with Image.open(io.BytesIO(blob)) as image:
      out[i] = np.asarray(image.convert("RGB"))
  return out


def read_split(z, split: str, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 NHWC images, int32 labels) of one split of the opened npz."""
  names = [f"{split}_jpeg", f"{split}_offsets", f"{split}_label"]
  missing = [n for n in names if n not in z.files]
  if missing:
    raise NpzError(
        f"no array {missing[0]!r} in the npz: expected {', '.join(names)} (the "
        f"layout of cifar10_jpeg.npz)"
    )
  jpeg, offsets, labels = (z[n] for n in names)
  n = len(offsets) - 1
  if n < 0 or len(labels) != n or offsets[-1] > len(jpeg):
    raise NpzError(f"{split}: {len(labels)} labels for {n} offsets over {len(jpeg)} bytes")
  blobs = [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in range(n)]
  chunks = [blobs[i : i + 2500] for i in range(0, n, 2500)]
  if workers > 1 and len(chunks) > 1:
    # "spawn": forking a process that has started JAX's threads can deadlock.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      parts = list(pool.map(_decode, chunks))
  else:
    parts = [_decode(c) for c in chunks]
  images = np.concatenate(parts) if parts else np.empty((0, 32, 32, 3), np.uint8)
  return images, labels.astype(np.int32)


def _write_batch(path: str, name: str, images: np.ndarray, labels: np.ndarray) -> None:
  # Keys as the official (Python 2) pickles give them to a loader with encoding="bytes".
  data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))
  batch = {
      b"batch_label": name.encode(),
      b"labels": [int(v) for v in labels],
      b"data": data,
      b"filenames": [f"{name.replace(' ', '_')}_{i:05d}.png".encode() for i in range(len(images))],
  }
  with fileio.atomic_write(path, "wb") as f:
    pickle.dump(batch, f, protocol=2)


def write_python_folder(npz_path: str, out_dir: str, workers: int | None = None) -> str:
  """Writes OUT_DIR/cifar-10-batches-py from the npz; returns that folder. `batches.meta` is
  written last, so a folder that has it is complete. About 15 s on one core for the 60,000
  images; `workers` processes decode (default: up to 8, one per core)."""
  workers = workers or min(8, os.cpu_count() or 1)
  folder = os.path.join(out_dir, cifar10.FOLDER)
  os.makedirs(folder, exist_ok=True)
  try:
    z = np.load(npz_path)
  except (OSError, ValueError) as e:
    raise NpzError(f"{npz_path}: not a readable npz ({e})") from None
  with z:
    train_images, train_labels = read_split(z, "train", workers)
    test_images, test_labels = read_split(z, "test", workers)
  # Five training batches, as the official files (10,000 images each for CIFAR-10 itself).
  parts = np.array_split(np.arange(len(train_images)), len(cifar10.TRAIN_BATCHES))
  for i, (name, part) in enumerate(zip(cifar10.TRAIN_BATCHES, parts)):
    _write_batch(
        os.path.join(folder, name),
        f"training batch {i + 1} of 5",
        train_images[part],
        train_labels[part],
    )
  _write_batch(
      os.path.join(folder, cifar10.TEST_BATCH), "testing batch 1 of 1", test_images, test_labels
  )
  with fileio.atomic_write(os.path.join(folder, "batches.meta"), "wb") as f:
    pickle.dump(
        {
            b"label_names": [n.encode() for n in LABEL_NAMES],
            b"num_cases_per_batch": BATCH,
            b"num_vis": 3072,
        },
        f,
        protocol=2,
    )
  return folder


def main(argv: list[str]) -> int:
  if len(argv) != 2 or argv[0].startswith("-"):
    print(__doc__, file=sys.stderr)
    return 2
  try:
    print(write_python_folder(argv[0], argv[1]))
  except NpzError as e:
    print(f"benchmarks.cifar10_npz: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
