import chex
import jax
import jax.numpy as jnp
import numpy as np

from nkd.data.augment import crop_and_flip, random_crop, random_flip


def _images(n=16):
  return jax.random.randint(jax.random.key(0), (n, 32, 32, 3), 1, 256).astype(jnp.uint8)


def test_same_key_same_output_and_different_keys_differ():
  x = _images()
  a = crop_and_flip(jax.random.key(1), x)
  chex.assert_trees_all_equal(a, crop_and_flip(jax.random.key(1), x))
  assert not np.array_equal(a, crop_and_flip(jax.random.key(2), x))
  chex.assert_shape(a, x.shape)
  chex.assert_type(a, jnp.uint8)


def test_crop_is_a_window_of_the_zero_padded_image():
  x = np.asarray(_images(32))
  out = np.asarray(random_crop(jax.random.key(3), jnp.asarray(x)))
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets_seen = set()
  for i in range(len(x)):
    matches = [
        (dy, dx)
        for dy in range(9)
        for dx in range(9)
        if np.array_equal(out[i], padded[i, dy : dy + 32, dx : dx + 32])
    ]
    assert matches, f"image {i} is not a crop of its padded image"
    offsets_seen.add(matches[0])
  assert len(offsets_seen) > 5  # Offsets vary across the batch.


def test_flip_mirrors_about_half_the_images():
  x = np.asarray(_images(256))
  out = np.asarray(random_flip(jax.random.key(4), jnp.asarray(x)))
  flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)])
  kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
  assert np.all(flipped | kept)
  assert 0.35 < flipped.mean() < 0.65
