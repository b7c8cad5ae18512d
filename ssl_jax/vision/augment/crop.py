"""Random resized crop: torchvision-style crop box sampling and antialiased crop-and-resize.

Boxes are traced integers and output shapes static, so crops run under jit and vmap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ssl_jax.vision.augment._image import as_image

# torchvision's RandomResizedCrop draws this many candidate boxes before falling back.
_CROP_ATTEMPTS = 10

# Uniforms one crop consumes. Ops take their randomness as uniforms drawn up front so that the
# SimCLR pipeline needs a single random draw (see views.py).
_CROP_UNIFORMS = 2 * _CROP_ATTEMPTS + 2  # areas, log-aspects, two offsets

# SimCLR's default aspect-ratio range (appendix A), shared by the single op and the pipeline.
_CROP_RATIO = (3 / 4, 4 / 3)


def sample_crop_box(
    rng: ArrayLike,
    height: int,
    width: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = _CROP_RATIO,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Samples an integer crop box the way torchvision's ``RandomResizedCrop`` does.

    Ten candidates are drawn at once, each with area fraction ``s ~ U(scale)`` and aspect
    ``w / h = exp(U(log ratio))``; the first that fits inside the image is taken and placed at a
    uniform random offset. If none fits, the largest centred box whose aspect is clamped into
    ``ratio`` is used, which is the whole image whenever the image's own aspect is within range.

    Args:
      rng: PRNG key.
      height: image height in pixels (static).
      width: image width in pixels (static).
      scale: (min, max) fraction of the image area covered by the box.
      ratio: (min, max) box aspect ratio width / height.

    Returns:
      ``(y0, x0, h, w)``: int32 scalars, top-left corner and size, with
      ``0 <= y0``, ``y0 + h <= height`` (likewise for x) and ``h, w >= 1``.

    >>> y0, x0, h, w = sample_crop_box(jax.random.key(0), 32, 32)
    >>> bool(0 <= y0 and y0 + h <= 32 and 0 <= x0 and x0 + w <= 32)
    True
    >>> [int(v) for v in sample_crop_box(jax.random.key(0), 32, 32, (0.25, 0.25), (1.0, 1.0))][2:]
    [16, 16]

    No square of the whole area fits in 20 x 40: the fallback is the centred 20 x 20 box.

    >>> [int(v) for v in sample_crop_box(jax.random.key(0), 20, 40, (1.0, 1.0), (1.0, 1.0))]
    [0, 10, 20, 20]
    """
    return _crop_box_from_uniforms(
        jax.random.uniform(rng, (_CROP_UNIFORMS,)), height, width, scale, ratio
    )


def _crop_box_from_uniforms(
    uniforms: jax.Array,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    area_u, ratio_u, offset_u = jnp.split(uniforms, [_CROP_ATTEMPTS, 2 * _CROP_ATTEMPTS])
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
    log_ratio_low, log_ratio_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_ratio_low + (log_ratio_high - log_ratio_low) * ratio_u)
    # jnp.round rounds half to even, like Python's round() in torchvision.
    box_w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
    box_h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = jnp.argmax(fits)  # index of the first True (0 when none is, handled below)

    # The fallback depends only on the static image size, so it is plain Python.
    image_ratio = width / height
    if image_ratio < min(ratio):
        fallback_w, fallback_h = width, round(width / min(ratio))
    elif image_ratio > max(ratio):
        fallback_w, fallback_h = round(height * max(ratio)), height
    else:
        fallback_w, fallback_h = width, height

    any_fits = jnp.any(fits)
    h = jnp.where(any_fits, box_h[first], fallback_h)
    w = jnp.where(any_fits, box_w[first], fallback_w)
    # floor(U * n) is uniform over {0, ..., n - 1}; the clip guards the float edge case U * n == n.
    # (jax.random.randint with traced bounds would do, but compiles an order of magnitude slower.)
    random_y0 = jnp.minimum(jnp.floor(offset_u[0] * (height - h + 1)).astype(jnp.int32), height - h)
    random_x0 = jnp.minimum(jnp.floor(offset_u[1] * (width - w + 1)).astype(jnp.int32), width - w)
    y0 = jnp.where(any_fits, random_y0, (height - fallback_h) // 2)
    x0 = jnp.where(any_fits, random_x0, (width - fallback_w) // 2)
    return y0, x0, h, w


def crop_and_resize(image: ArrayLike, box: Sequence[ArrayLike], out_size: int) -> jax.Array:
    """Resamples the box ``(y0, x0, h, w)`` of ``image`` to ``[out_size, out_size]``.

    Bilinear with antialiasing, and equal (up to rounding) to
    ``jax.image.resize(image[y0:y0+h, x0:x0+w], ...)`` for an integer box, but with a traced box
    and static shapes. ``scale_and_translate`` maps input coordinate ``u`` to output coordinate
    ``u * scale + translation`` (pixel centres at +0.5), so the box maps to ``[0, out_size)`` with
    ``scale = out_size / h`` and ``translation = -y0 * scale``.

    Args:
      image: [H, W, C] float image.
      box: ``(y0, x0, h, w)`` in pixels, scalars (may be traced).
      out_size: side of the square output (static).

    Returns:
      [out_size, out_size, C] float32.

    >>> image = jnp.arange(16.0).reshape(4, 4, 1)
    >>> crop_and_resize(image, (0, 0, 4, 4), 4)[..., 0].tolist() == image[..., 0].tolist()
    True
    >>> crop_and_resize(image, (1, 1, 2, 2), 4)[..., 0]  # rows 1-2, columns 1-2, doubled
    Array([[ 5.  ,  5.25,  5.75,  6.  ],
           [ 6.  ,  6.25,  6.75,  7.  ],
           [ 8.  ,  8.25,  8.75,  9.  ],
           [ 9.  ,  9.25,  9.75, 10.  ]], dtype=float32)
    """
    image = as_image(image, "crop_and_resize").astype(jnp.float32)
    height, width, _ = image.shape
    y0, x0, h, w = (jnp.asarray(v, jnp.float32) for v in box)
    scale = jnp.stack([out_size / h, out_size / w])
    translation = jnp.stack([-y0, -x0]) * scale

    # Near the box edge the kernel reaches pixels outside the box, which a crop would not see.
    # Resampling the box's indicator with the same weights gives, per output pixel, the weight
    # that fell inside the box; dividing by it renormalises onto box pixels only, exactly what
    # resizing the cropped image does at its border.
    rows = jnp.arange(height, dtype=jnp.float32)
    cols = jnp.arange(width, dtype=jnp.float32)
    inside = ((rows >= y0) & (rows < y0 + h))[:, None] & ((cols >= x0) & (cols < x0 + w))[None, :]
    masked = jnp.concatenate([image * inside[..., None], inside[..., None]], axis=-1)
    resampled = jax.image.scale_and_translate(
        masked,
        (out_size, out_size, masked.shape[-1]),
        spatial_dims=(0, 1),
        scale=scale,
        translation=translation,
        method="linear",
        antialias=True,
    )
    weight_inside = resampled[..., -1:]
    return resampled[..., :-1] / jnp.maximum(weight_inside, 1e-6)


def random_resized_crop(
    rng: ArrayLike,
    image: ArrayLike,
    *,
    out_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = _CROP_RATIO,
) -> jax.Array:
    """Crops a random box (see :func:`sample_crop_box`) and resizes it to a square.

    Args:
      rng: PRNG key.
      image: [H, W, C] float image.
      out_size: side of the square output (static).
      scale: (min, max) fraction of the image area covered by the box.
      ratio: (min, max) box aspect ratio width / height.

    Returns:
      [out_size, out_size, C] float32.

    >>> image = jnp.full((16, 16, 3), 0.5)
    >>> view = random_resized_crop(jax.random.key(0), image, out_size=8)
    >>> view.shape, round(float(view.min()), 4), round(float(view.max()), 4)  # no dark border
    ((8, 8, 3), 0.5, 0.5)

    References:
      Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (the Inception crop);
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = as_image(image, "random_resized_crop")
    height, width, _ = image.shape
    box = sample_crop_box(rng, height, width, scale, ratio)
    return crop_and_resize(image, box, out_size)
