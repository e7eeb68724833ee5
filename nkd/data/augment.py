"""On-device augmentation: random crop with zero padding and horizontal flip, from a key."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop(key: jax.Array, images: jax.Array, *, pad: int = 4) -> jax.Array:
  """Pads each NHWC image with zeros by `pad` and crops back at a random offset per image."""
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
  crop = lambda im, off: jax.lax.dynamic_slice(  # noqa: E731
      im, (off[0], off[1], 0), (h, w, im.shape[-1])
  )
  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def crop_and_flip(key: jax.Array, images: jax.Array, *, pad: int = 4) -> jax.Array:
  crop_key, flip_key = jax.random.split(key)
  return random_flip(flip_key, random_crop(crop_key, images, pad=pad))


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]; float images are taken to be in [0, 1] already. The one
  conversion of the trainer and the evaluators: numpy arrays stay numpy, jax arrays jax."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)
