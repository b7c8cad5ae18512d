"""Input checks shared by the augmentations: one image [H, W, C], uint8 or float in [0, 1].

Each op validates its argument here so every error message names the function that was called.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def as_image(image: ArrayLike, name: str) -> jax.Array:
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"{name} expects one image [H, W, C]; got shape {image.shape}.")
    return image


def to_unit_float(image: jax.Array) -> jax.Array:
    if image.dtype == jnp.uint8:
        return image.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1]; got dtype {image.dtype}.")
    return image.astype(jnp.float32)
