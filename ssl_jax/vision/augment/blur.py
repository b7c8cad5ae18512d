"""Gaussian blur with a random sigma: separable, reflect-padded, static kernel size.

A short static loop over taps keeps it jit- and vmap-friendly on tiny and large images alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ssl_jax.vision.augment._image import as_image

# Uniforms one blur consumes, drawn up front like every op's (see views.py).
_BLUR_UNIFORMS = 1  # sigma

# SimCLR's defaults (appendix A), shared by the single op and the pipeline.
_BLUR_SIGMA_RANGE = (0.1, 2.0)
_BLUR_KERNEL_FRACTION = 0.1


def gaussian_blur(
    rng: ArrayLike,
    image: ArrayLike,
    *,
    sigma_range: Sequence[float] = _BLUR_SIGMA_RANGE,
    kernel_fraction: float = _BLUR_KERNEL_FRACTION,
) -> jax.Array:
    """Separable Gaussian blur with ``sigma ~ U(sigma_range)`` and reflect padding.

    The kernel spans about ``kernel_fraction`` of the shorter image side, forced odd and at
    least 3 taps so that tiny test images are still blurred.

    Args:
      rng: PRNG key.
      image: [H, W, C] float image.
      sigma_range: (min, max) standard deviation in pixels.
      kernel_fraction: kernel size as a fraction of ``min(H, W)`` (static).

    Returns:
      [H, W, C] float image, a convex combination of input pixels.

    >>> image = jnp.full((8, 8, 3), 0.25)
    >>> bool(jnp.allclose(gaussian_blur(jax.random.key(0), image), image))  # flat stays flat
    True

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = as_image(image, "gaussian_blur")
    sigma_u = jax.random.uniform(rng, (_BLUR_UNIFORMS,))
    return _gaussian_blur_from_uniforms(sigma_u, image, sigma_range, kernel_fraction)


def _gaussian_blur_from_uniforms(
    uniforms: jax.Array, image: jax.Array, sigma_range: Sequence[float], kernel_fraction: float
) -> jax.Array:
    height, width, _ = image.shape
    radius = max(1, int(kernel_fraction * min(height, width)) // 2)
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * uniforms[0]
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    taps = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    taps = (taps / jnp.sum(taps)).astype(image.dtype)

    def blur_axis(x: jax.Array, axis: int) -> jax.Array:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = jnp.pad(x, pad, mode="reflect")
        size = x.shape[axis]
        # A short static loop over taps keeps every op a whole-image slice (fast, vmap-friendly).
        return sum(
            taps[t] * jax.lax.slice_in_dim(padded, t, t + size, axis=axis)
            for t in range(2 * radius + 1)
        )

    return blur_axis(blur_axis(image, 0), 1)
