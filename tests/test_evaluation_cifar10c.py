"""CIFAR-10-C readers (official layout, TFDS, auto fallback) and evaluate_cifar10c."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nkd.errors import NkdError
from nkd.evaluation import cifar10c, predict

N = 10  # images per severity in the fixtures


def _classify_by_first_pixel(variables, x):
  del variables
  """A jittable 'model': class = round(255 * red value of pixel (0, 0)) mod 10."""
  return jax.nn.one_hot(jnp.round(x[:, 0, 0, 0] * 255).astype(jnp.int32) % 10, 10)


def _images_with_accuracy(labels: np.ndarray, num_correct: int) -> np.ndarray:
  images = np.zeros((len(labels), 32, 32, 3), np.uint8)
  images[:, 0, 0, 0] = (labels + (np.arange(len(labels)) >= num_correct)) % 10
  return images


def _write_official(folder, names, *, correct_per_severity=(10, 8, 6, 4, 2)):
  """Official layout: severity s in rows (s-1)*N .. s*N; accuracy known per severity."""
  folder.mkdir(parents=True, exist_ok=True)
  labels = np.tile(np.arange(N) % 10, 5).astype(np.uint8)
  for name in names:
    blocks = [_images_with_accuracy(labels[:N], k) for k in correct_per_severity]
    np.save(folder / f"{name}.npy", np.concatenate(blocks))
  np.save(folder / "labels.npy", labels)
  return labels


def test_reads_severity_blocks_and_evaluates(tmp_path):
  _write_official(tmp_path, ["fog", "snow", "saturate"])
  data = cifar10c.load_cifar10c_folder(str(tmp_path))
  assert data.source == "official" and data.num_per_severity == N
  assert set(data.images) == {"fog", "snow", "saturate"}
  assert len(data.missing) == 16 and "not found" in data.missing["contrast"]
  images, labels = data.severity("fog", 3)
  assert images.shape == (N, 32, 32, 3)
  np.testing.assert_array_equal(images, np.load(tmp_path / "fog.npy")[2 * N : 3 * N])
  result = cifar10c.evaluate_cifar10c(_classify_by_first_pixel, {}, data, batch_size=4)
  assert result["accuracy"]["fog"] == {"1": 100.0, "2": 80.0, "3": 60.0, "4": 40.0, "5": 20.0}
  assert result["mean_per_corruption"]["snow"] == pytest.approx(60.0)
  assert result["mean_15"] is None and result["mean_19"] is None
  assert len(result["missing"]) == 16 and "contrast" in result["missing_reasons"]
  assert result["source"] == "official"


def test_means_over_all_corruptions_and_one_compiled_core(tmp_path):
  _write_official(tmp_path, cifar10c.CORRUPTIONS[:15], correct_per_severity=(10, 10, 5, 5, 0))
  _write_official(tmp_path, cifar10c.CORRUPTIONS[15:], correct_per_severity=(10,) * 5)
  data = cifar10c.load_cifar10c(source="official", folder=str(tmp_path))
  fresh_apply = lambda v, x: _classify_by_first_pixel(v, x)  # noqa: E731 - a new jit entry
  before = predict.logits_core_cache_size()
  result = cifar10c.evaluate_cifar10c(fresh_apply, {}, data, batch_size=N)
  assert predict.logits_core_cache_size() - before == 1  # 19 x 5 sets, one compilation
  assert result["mean_15"] == pytest.approx(60.0)
  assert result["mean_19"] == pytest.approx((15 * 60.0 + 4 * 100.0) / 19)
  assert result["missing"] == []
  partial = cifar10c.evaluate_cifar10c(fresh_apply, {}, data, batch_size=N, severities=(1, 2))
  assert partial["mean_15"] is None  # RobustBench's mean needs all five severities


@pytest.mark.parametrize(
    "problem, match",
    [
        ("float", "fog.npy"),
        ("shape", "fog.npy"),
        ("no_labels", "labels.npy"),
        ("labels_not_5n", "labels.npy"),
        ("none", "none of the corruption files"),
    ],
)
def test_malformed_folders_raise_naming_the_file(tmp_path, problem, match):
  _write_official(tmp_path, ["fog"])
  if problem == "float":
    np.save(tmp_path / "fog.npy", np.zeros((5 * N, 32, 32, 3), np.float32))
  elif problem == "shape":
    np.save(tmp_path / "fog.npy", np.zeros((5 * N, 32, 32), np.uint8))
  elif problem == "no_labels":
    (tmp_path / "labels.npy").unlink()
  elif problem == "labels_not_5n":
    np.save(tmp_path / "labels.npy", np.zeros(5 * N + 1, np.uint8))
  elif problem == "none":
    (tmp_path / "fog.npy").unlink()
  with pytest.raises(NkdError, match=match):
    cifar10c.load_cifar10c_folder(str(tmp_path))


def test_source_options(tmp_path):
  with pytest.raises(NkdError, match="source"):
    cifar10c.load_cifar10c("internet")
  with pytest.raises(NkdError, match="cifar10c_dir"):
    cifar10c.load_cifar10c("official")
  with pytest.raises(ValueError, match="unknown corruption"):
    cifar10c.load_cifar10c_folder(str(tmp_path), ["rain"])


def test_tfds_unavailable_is_a_clear_error_and_names_map(tmp_path):
  assert cifar10c.TFDS_NAMES["glass_blur"] == "frosted_glass_blur"
  assert cifar10c.TFDS_NAMES["elastic_transform"] == "elastic"
  with pytest.raises(cifar10c.DataUnavailableError, match="cifar10_corrupted/frosted_glass_blur_1"):
    cifar10c.load_cifar10c_tfds(["glass_blur"], data_dir=str(tmp_path / "empty"))


def test_auto_prefers_the_folder_then_falls_back_to_regeneration(tmp_path):
  _write_official(tmp_path / "official", ["fog"])
  clean = np.random.default_rng(0).integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(N) % 10
  data = cifar10c.load_cifar10c(
      "auto",
      folder=str(tmp_path / "official"),
      corruptions=["fog"],
      clean_images=clean,
      clean_labels=labels,
      cache_dir=str(tmp_path / "cache"),
  )
  assert data.source == "official"
  data = cifar10c.load_cifar10c(
      "auto",
      folder=str(tmp_path / "absent"),
      corruptions=["fog"],
      clean_images=clean,
      clean_labels=labels,
      cache_dir=str(tmp_path / "cache"),
      tfds_data_dir=str(tmp_path / "no_tfds"),
  )
  assert data.source == "regenerated"
  assert "absent" in data.details["fallbacks"][0] and "tfds" in data.details["fallbacks"][1]
  result = cifar10c.evaluate_cifar10c(_classify_by_first_pixel, {}, data, batch_size=N)
  assert result["source"] == "regenerated" and result["details"]["seed"] == 0
