"""CIFAR-10-C (Hendrycks & Dietterich, 2019): load it ("official" .npy folder, "tfds", or
"regenerated" offline by `generate`; "auto" tries them in that order) and evaluate on it.

Every result records its `source`; docs/EVALUATION.md describes the three.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from nkd import fileio
from nkd.config.evaluation import (
    CIFAR10C_SOURCES as SOURCES,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    STANDARD_CORRUPTIONS,
)
from nkd.errors import ConfigError, DataError
from nkd.evaluation import batching, predict
from nkd.evaluation.evaluator import EvalData, Model
from nkd.evaluation.cifar10c.generate import (FIDELITY, corrupt, load_frost_images)

__all__ = [
    "CORRUPTIONS",
    "STANDARD_CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "SOURCES",
    "TFDS_NAMES",
    "Cifar10CData",
    "DataUnavailableError",
    "load_cifar10c_folder",
    "load_cifar10c_tfds",
    "regenerate_cifar10c",
    "load_cifar10c",
    "evaluate_cifar10c",
    "run",
]

TFDS_NAMES = {name: name for name in CORRUPTIONS}
TFDS_NAMES.update({"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"})
GENERATOR_VERSION = "nkd-make_cifar_c-1"
_REGEN_CHUNK = 1000  # images per corruption call; part of what a seed means, so fixed


class DataUnavailableError(DataError):
  """A data source cannot be used here (not prepared, no TensorFlow, ...): try another."""


@dataclasses.dataclass
class Cifar10CData:
  """Corrupted images per corruption, (len(severities) N, 32, 32, 3) uint8 each, the k-th of
  `severities` in rows k N .. (k+1) N (all five, in order, for the official layout: severity s
  in rows (s-1) N .. s N); `labels` likewise. `missing` maps each corruption not present to the
  reason."""

  source: str
  images: Mapping[str, np.ndarray]
  labels: np.ndarray
  num_per_severity: int
  missing: dict = dataclasses.field(default_factory=dict)
  details: dict = dataclasses.field(default_factory=dict)
  severities: tuple[int, ...] = SEVERITIES

  def severity(self, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    if severity not in SEVERITIES:
      raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if severity not in self.severities:
      raise ValueError(
          f"severity {severity} was not loaded (this {self.source} set holds severities "
          f"{list(self.severities)})"
      )
    n = self.num_per_severity
    k = self.severities.index(severity)
    rows = slice(k * n, (k + 1) * n)
    return self.images[name][rows], self.labels[rows]


def _check_names(corruptions: Sequence[str] | None) -> tuple[str, ...]:
  names = tuple(CORRUPTIONS if corruptions is None else corruptions)
  unknown = [n for n in names if n not in CORRUPTIONS]
  if unknown:
    raise ValueError(f"unknown corruption(s) {unknown}: expected names from {CORRUPTIONS}")
  return names


# ----- the official folder ---------------------------------------------------------------------


def load_cifar10c_folder(
    folder: str, corruptions: Sequence[str] | None = None, *, source: str = "official"
) -> Cifar10CData:
  """Reads `<name>.npy` + `labels.npy` (memory-mapped); DataError naming any bad file."""
  names = _check_names(corruptions)
  if not os.path.isdir(folder):
    raise DataError(f"CIFAR-10-C folder {folder} does not exist")
  labels_path = os.path.join(folder, "labels.npy")
  if not os.path.isfile(labels_path):
    raise DataError(f"CIFAR-10-C folder {folder} has no labels.npy ({labels_path})")
  labels = np.load(labels_path)
  if (
      labels.ndim != 1
      or not np.issubdtype(labels.dtype, np.integer)
      or len(labels) == 0
      or len(labels) % len(SEVERITIES)
  ):
    raise DataError(
        f"{labels_path}: expected integer labels of shape (5N,), got "
        f"{labels.dtype} {labels.shape}"
    )
  images, missing = {}, {}
  for name in names:
    path = os.path.join(folder, f"{name}.npy")
    if not os.path.isfile(path):
      missing[name] = f"{path} not found"
      continue
    array = np.load(path, mmap_mode="r")
    if array.dtype != np.uint8 or array.shape != (len(labels), 32, 32, 3):
      raise DataError(
          f"{path}: expected uint8 {(len(labels), 32, 32, 3)} (matching "
          f"labels.npy), got {array.dtype} {array.shape}"
      )
    images[name] = array
  if not images:
    raise DataError(
        f"CIFAR-10-C folder {folder} holds none of the corruption files "
        f"{[n + '.npy' for n in names]}"
    )
  details = {"folder": os.path.abspath(folder)}
  manifest = os.path.join(folder, "manifest.json")
  if os.path.isfile(manifest):
    with open(manifest) as f:
      details.update(json.load(f))
    missing.update({k: v for k, v in details.get("missing", {}).items() if k in missing})
  return Cifar10CData(
      source, images, labels.astype(np.int32), len(labels) // len(SEVERITIES), missing, details
  )


# ----- TFDS ------------------------------------------------------------------------------------


def load_cifar10c_tfds(
    corruptions: Sequence[str] | None = None, *, data_dir: str | None = None
) -> Cifar10CData:
  """TFDS `cifar10_corrupted`, already prepared in `data_dir`; DataUnavailableError otherwise."""
  names = _check_names(corruptions)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except Exception as e:  # noqa: BLE001 - any import failure means "not available"
    raise DataUnavailableError(
        f"--cifar10c_source=tfds needs tensorflow-datasets, which cannot be "
        f"imported ({e}): pip install tensorflow-datasets"
    ) from e
  images, labels = {}, None
  for name in names:
    per_severity, per_labels = [], []
    for severity in SEVERITIES:
      split_images, split_labels = _tfds_test_split(
          tfds, f"cifar10_corrupted/{TFDS_NAMES[name]}_{severity}", data_dir
      )
      per_severity.append(split_images)
      per_labels.append(split_labels)
    stacked_labels = np.concatenate(per_labels)
    if labels is not None and not np.array_equal(labels, stacked_labels):
      raise DataError(f"TFDS {name}: labels differ from the other corruptions' labels")
    labels = stacked_labels
    images[name] = np.concatenate(per_severity)
  return Cifar10CData(
      "tfds",
      images,
      labels,
      len(labels) // len(SEVERITIES),
      details={"tfds_data_dir": data_dir, "tfds_names": {n: TFDS_NAMES[n] for n in names}},
  )


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _tfds_test_split(tfds, config: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """The test split as arrays: array_record data source first (no TensorFlow needed), then
  tfds.load (needs TensorFlow). Never downloads."""
  errors = []
  try:
    source = tfds.data_source(config, split="test", data_dir=data_dir, download=False)
    items = [source[i] for i in range(len(source))]
    return (
        np.stack([it["image"] for it in items]).astype(np.uint8),
        np.asarray([it["label"] for it in items], np.int32),
    )
  except Exception as e:  # noqa: BLE001 - TFDS raises assorted errors for absent data
    errors.append(f"data_source: {_first_line(e)}")
  try:
    batch = tfds.as_numpy(
        tfds.load(config, split="test", data_dir=data_dir, download=False, batch_size=-1)
    )
    return np.asarray(batch["image"], np.uint8), np.asarray(batch["label"], np.int32)
  except Exception as e:  # noqa: BLE001
    errors.append(f"load: {_first_line(e)}")
  raise DataUnavailableError(
      f"TFDS could not load {config} (data_dir={data_dir}): " + "; ".join(errors)
  )


# ----- regeneration ----------------------------------------------------------------------------


def _digest(clean_images: np.ndarray, clean_labels: np.ndarray, seed: int, frost: bool) -> str:
  h = hashlib.sha256()
  h.update(np.ascontiguousarray(clean_images).tobytes())
  h.update(np.ascontiguousarray(clean_labels, np.int64).tobytes())
  h.update(f"{GENERATOR_VERSION}/{seed}/{frost}".encode())
  return h.hexdigest()


def regenerate_cifar10c(
    clean_images: np.ndarray,
    clean_labels: np.ndarray,
    *,
    cache_dir: str,
    seed: int,
    corruptions: Sequence[str] | None = None,
    frost_dir: str | None = None,
    severities: Sequence[int] = SEVERITIES,
) -> Cifar10CData:
  """Makes (or reuses from cache_dir) CIFAR-10-C from clean uint8 test images, at `severities`.

  Corruption c at severity s uses numpy Generator SeedSequence([seed, index of c in
  CORRUPTIONS, s]), images in chunks of 1000, so each corruption's and severity's stream is
  independent of which others are made. Cached under cache_dir/cifar10c_regenerated/<digest of
  the clean set, seed and generator version>/ in the official layout (`<name>.npy`, all five
  severities) with a manifest.json; where fewer severities are asked, only those are made, each
  cached as `<name>-<s>.npy`, and a later request for all five makes the rest and writes the
  official file.
  """
  names = _check_names(corruptions)
  severities = tuple(sorted({int(s) for s in severities}))
  if not severities or any(s not in SEVERITIES for s in severities):
    raise ValueError(f"severities must be drawn from {SEVERITIES}, got {list(severities)}")
  clean_images, clean_labels = np.asarray(clean_images), np.asarray(clean_labels)
  if (
      clean_images.dtype != np.uint8
      or clean_images.ndim != 4
      or clean_images.shape[1:] != (32, 32, 3)
      or len(clean_images) != len(clean_labels)
      or len(clean_images) == 0
  ):
    raise ValueError(
        f"regeneration needs uint8 (N, 32, 32, 3) clean images with N labels, got "
        f"{clean_images.dtype} {clean_images.shape} and {len(clean_labels)} labels"
    )
  if not cache_dir:
    raise ConfigError("regenerating CIFAR-10-C needs a cache folder (--eval_cache_dir)")
  frost_images = load_frost_images(frost_dir) if frost_dir else None
  digest = _digest(clean_images, clean_labels, seed, frost_images is not None)
  folder = os.path.join(cache_dir, "cifar10c_regenerated", digest[:16])
  os.makedirs(folder, exist_ok=True)
  manifest_path = os.path.join(folder, "manifest.json")
  manifest = {
      "source": "regenerated",
      "generator": GENERATOR_VERSION,
      "seed": int(seed),
      "clean_sha256": digest,
      "num_per_severity": int(len(clean_images)),
      "reference": "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py",
      "fidelity": {},
      "missing": {},
  }
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      manifest.update(json.load(f))
  labels_path = os.path.join(folder, "labels.npy")
  if not os.path.isfile(labels_path):
    fileio.save_npy(labels_path, np.tile(clean_labels.astype(np.uint8), len(SEVERITIES)))
  for name in names:
    path = os.path.join(folder, f"{name}.npy")
    if name == "frost" and frost_images is None:
      manifest["missing"]["frost"] = (
          "not regenerated: frost blends in the photographs frost1.png .. frost5.jpg that ship "
          "with hendrycks/robustness (ImageNet-C/create_c); pass their folder as frost_dir "
          "(--cifar10c_frost_dir) to regenerate it"
      )
      continue
    if not os.path.isfile(path):
      parts = {s: _severity_path(folder, name, s) for s in severities}
      todo = [s for s in severities if not os.path.isfile(parts[s])]
      if todo:
        logging.info(
            "Regenerating CIFAR-10-C %s (%d images x severities %s, seed %d) into %s",
            name,
            len(clean_images),
            todo,
            seed,
            folder,
        )
      if severities == SEVERITIES:  # all five: the official file, from earlier parts and these
        n = len(clean_images)
        out = np.empty((len(SEVERITIES) * n, 32, 32, 3), np.uint8)
        for s in SEVERITIES:
          rows = slice((s - 1) * n, s * n)
          if s in todo:
            out[rows] = _regenerate_severity(name, clean_images, s, seed, frost_images)
          else:
            out[rows] = np.load(parts[s])
        fileio.save_npy(path, out)
        for s in SEVERITIES:
          if s not in todo:
            os.remove(parts[s])
      else:
        for s in todo:
          fileio.save_npy(parts[s], _regenerate_severity(name, clean_images, s, seed, frost_images))
    manifest["fidelity"][name] = FIDELITY[name]
    manifest["missing"].pop(name, None)
  fileio.write_json(manifest_path, manifest, indent=1)
  present = [n for n in names if n not in manifest["missing"]]
  if all(os.path.isfile(os.path.join(folder, f"{n}.npy")) for n in present):
    data = load_cifar10c_folder(folder, names, source="regenerated")
  else:  # some corruptions at the asked severities only
    data = Cifar10CData(
        "regenerated",
        {n: _load_severities(folder, n, severities) for n in present},
        np.tile(clean_labels.astype(np.int32), len(severities)),
        len(clean_images),
        severities=severities,
    )
  data.missing.update({k: v for k, v in manifest["missing"].items() if k in names})
  data.details = {k: v for k, v in manifest.items() if k != "missing"}
  data.details["folder"] = folder
  return data


def _severity_path(folder: str, name: str, severity: int) -> str:
  return os.path.join(folder, f"{name}-{severity}.npy")


def _regenerate_severity(name, clean_images, severity, seed, frost_images) -> np.ndarray:
  """Corruption `name` at `severity` of every clean image (N, 32, 32, 3) uint8."""
  rng = np.random.default_rng(
      np.random.SeedSequence([int(seed), CORRUPTIONS.index(name), severity])
  )
  out = np.empty((len(clean_images), 32, 32, 3), np.uint8)
  for start in range(0, len(clean_images), _REGEN_CHUNK):
    chunk = clean_images[start : start + _REGEN_CHUNK]
    out[start : start + len(chunk)] = corrupt(
        name, chunk, severity, rng=rng, frost_images=frost_images
    )
  return out


def _load_severities(folder: str, name: str, severities: tuple[int, ...]) -> np.ndarray:
  """`severities` of `name` in order, from the official file where it exists, else its parts."""
  full = os.path.join(folder, f"{name}.npy")
  if os.path.isfile(full):
    array = np.load(full, mmap_mode="r")
    n = len(array) // len(SEVERITIES)
    return np.concatenate([array[(s - 1) * n : s * n] for s in severities])
  return np.concatenate([np.load(_severity_path(folder, name, s)) for s in severities])


# ----- choosing a source -----------------------------------------------------------------------


def load_cifar10c(
    source: str = "auto",
    *,
    folder: str | None = None,
    corruptions: Sequence[str] | None = None,
    tfds_data_dir: str | None = None,
    clean_images: np.ndarray | None = None,
    clean_labels: np.ndarray | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    frost_dir: str | None = None,
    severities: Sequence[int] = SEVERITIES,
) -> Cifar10CData:
  """The corrupted set from `source` ("auto", "official", "tfds", "regenerate"); regeneration
  makes `severities` only (the other sources hold all five).

  "auto" falls back official folder -> TFDS -> regeneration, recording why in
  details["fallbacks"]; a folder that exists but is malformed raises DataError instead.
  """
  if source not in SOURCES:
    raise ConfigError(f"CIFAR-10-C source must be one of {SOURCES}, got {source!r}")
  if source == "official":
    if not folder:
      raise ConfigError("CIFAR-10-C source 'official' needs the folder (--cifar10c_dir)")
    return load_cifar10c_folder(folder, corruptions)
  if source == "tfds":
    return load_cifar10c_tfds(corruptions, data_dir=tfds_data_dir)
  fallbacks = []
  if source == "auto":
    if folder and os.path.isfile(os.path.join(folder, "labels.npy")):
      return load_cifar10c_folder(folder, corruptions)
    fallbacks.append(
        "official folder: " + (f"{folder} has no labels.npy" if folder else "not given")
    )
    try:
      data = load_cifar10c_tfds(corruptions, data_dir=tfds_data_dir)
      data.details["fallbacks"] = fallbacks
      return data
    except DataUnavailableError as e:
      fallbacks.append(f"tfds: {e}")
    logging.info("CIFAR-10-C: no official folder or TFDS copy (%s); regenerating", fallbacks)
  if clean_images is None or clean_labels is None:
    raise ValueError("regenerating CIFAR-10-C needs the clean test images and labels")
  data = regenerate_cifar10c(
      clean_images,
      clean_labels,
      cache_dir=cache_dir,
      seed=seed,
      corruptions=corruptions,
      frost_dir=frost_dir,
      severities=severities,
  )
  if fallbacks:
    data.details["fallbacks"] = fallbacks
  return data


# ----- evaluation ------------------------------------------------------------------------------


def _mean(values) -> float | None:
  values = list(values)
  return float(np.mean(values)) if values else None


def relative_accuracy(section: dict, clean_accuracy: float | None) -> dict:
  """The relative keys of a CIFAR-10-C section: accuracy as a percentage of the clean test
  accuracy (corrupted / clean x 100), as the paper's Figure 5 most likely reports it.

  Returns {"clean_accuracy", "relative_accuracy": {name: {"1": .., ..}},
  "relative_mean_per_corruption", "relative_mean_15", "relative_mean_19"}; the values are None
  where the clean accuracy is unknown or 0.
  """

  def relative(value):
    return None if value is None or not clean_accuracy else 100.0 * value / clean_accuracy

  return {
      "clean_accuracy": clean_accuracy,
      "relative_accuracy": {
          name: {s: relative(v) for s, v in by_severity.items()}
          for name, by_severity in section["accuracy"].items()
      },
      "relative_mean_per_corruption": {
          name: relative(v) for name, v in section["mean_per_corruption"].items()
      },
      "relative_mean_15": relative(section["mean_15"]),
      "relative_mean_19": relative(section["mean_19"]),
  }


def evaluate_cifar10c(
    apply_fn: predict.ApplyFn,
    variables,
    data: Cifar10CData,
    batch_size: int = 1000,
    severities: Sequence[int] = SEVERITIES,
    clean_accuracy: float | None = None,
) -> dict:
  """Accuracy (percent) per corruption and severity; one compiled core for all of them.

  Returns {"source", "num_per_severity", "severities", "accuracy": {name: {"1": .., ..}},
  "mean_per_corruption", "mean_15" (mean over the 15 standard corruptions x 5 severities,
  RobustBench style; None if any is missing), "mean_19" (all 19; None if any is missing),
  "missing": [names], "missing_reasons": {name: reason}, "details"}, and beside each absolute
  value its relative one (`relative_accuracy`, with `clean_accuracy`, the clean test accuracy
  in percent, given by the caller).
  """
  severities = tuple(int(s) for s in severities)
  if not severities or any(s not in SEVERITIES for s in severities):
    raise ValueError(f"severities must be drawn from {SEVERITIES}, got {severities}")
  batching.check_batch_size(batch_size)
  accuracy = {}
  for name in CORRUPTIONS:
    if name not in data.images:
      continue
    accuracy[name] = {}
    for severity in severities:
      images, labels = data.severity(name, severity)
      correct = predict.count_correct(apply_fn, variables, images, labels, batch_size)
      accuracy[name][str(severity)] = 100.0 * correct / len(labels)
    logging.info("CIFAR-10-C %s (%s): %s", name, data.source, accuracy[name])
  missing = [n for n in CORRUPTIONS if n not in data.images]
  all_severities = severities == SEVERITIES
  per_corruption = {n: _mean(a.values()) for n, a in accuracy.items()}

  def grand_mean(names):
    if not all_severities or any(n not in accuracy for n in names):
      return None
    return _mean(v for n in names for v in accuracy[n].values())

  section = {
      "source": data.source,
      "num_per_severity": int(data.num_per_severity),
      "severities": list(severities),
      "accuracy": accuracy,
      "mean_per_corruption": per_corruption,
      "mean_15": grand_mean(STANDARD_CORRUPTIONS),
      "mean_19": grand_mean(CORRUPTIONS),
      "missing": missing,
      "missing_reasons": {n: data.missing.get(n, "not loaded") for n in missing},
      "details": dict(data.details),
  }
  return {**section, **relative_accuracy(section, clean_accuracy)}


def run(model: Model, data: EvalData, options) -> dict:
  """The suite's "cifar10_c" section: --cifar10c_source's data (regenerated from the test set
  where it comes to that), every --cifar10c_severities, relative to the clean accuracy."""
  corrupted = load_cifar10c(
      options.cifar10c_source,
      folder=options.cifar10c_dir or None,
      corruptions=options.corruptions,
      tfds_data_dir=options.tfds_data_dir or None,
      clean_images=data.images,
      clean_labels=data.labels,
      cache_dir=data.cache_dir,
      seed=options.cifar10c_seed,
      frost_dir=options.cifar10c_frost_dir or None,
      severities=options.cifar10c_severities,
  )
  section = evaluate_cifar10c(
      model.apply_fn,
      model.variables,
      corrupted,
      options.eval_batch_size,
      options.cifar10c_severities,
      clean_accuracy=data.clean_accuracy(model, options.eval_batch_size),
  )
  logging.info(
      "CIFAR-10-C (%s): mean_15 %s, missing %s",
      corrupted.source,
      section["mean_15"],
      section["missing"],
  )
  return section
