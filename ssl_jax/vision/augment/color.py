"""Colour ops: grayscale, RGB <-> HSV, brightness/contrast/saturation/hue and colour jitter.

Images are float in [0, 1]; every adjustment clips back into that range.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ssl_jax.vision.augment._image import as_image

# ITU-R BT.601 luma weights, the ones torchvision and PIL use for "L" conversion.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Uniforms one colour jitter consumes, drawn up front like every op's (see views.py).
_JITTER_UNIFORMS = 8  # four factors, four sort keys for the order


def to_grayscale(image: ArrayLike) -> jax.Array:
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, keeping the channel count.

    A colour image stays 3-channel (three equal channels) so the encoder's input shape does not
    change; a 1-channel image is returned as is.

    Args:
      image: [H, W, C] float image, C in {1, 3}.

    Returns:
      [H, W, C] image of the same float dtype.

    >>> [round(v, 4) for v in to_grayscale(jnp.array([[[1.0, 0.5, 0.0]]]))[0, 0].tolist()]
    [0.5925, 0.5925, 0.5925]
    """
    image = as_image(image, "to_grayscale")
    channels = image.shape[-1]
    if channels == 1:
        return image
    if channels != 3:
        raise ValueError(f"to_grayscale expects 1 or 3 channels; got {channels}.")
    # Multiply-add rather than a matmul, which accelerators may run in reduced (TF32) precision.
    luma = jnp.sum(image * jnp.asarray(_LUMA_WEIGHTS, image.dtype), axis=-1)
    return jnp.repeat(luma[..., None], 3, axis=-1)


def rgb_to_hsv(image: ArrayLike) -> jax.Array:
    """Converts RGB in [0, 1] to HSV, each channel in [0, 1] (hue in turns).

    Grey pixels (no chroma) get hue 0; black pixels get saturation 0.

    Args:
      image: [..., 3] float RGB.

    Returns:
      [..., 3] float HSV.

    >>> rgb_to_hsv(jnp.array([0.0, 0.0, 1.0])).tolist()  # pure blue: hue 2/3
    [0.6666666865348816, 1.0, 1.0]
    """
    image = jnp.asarray(image)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    value = jnp.max(image, axis=-1)
    chroma = value - jnp.min(image, axis=-1)
    saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
    # A safe divisor keeps the unused branch finite, so gradients and jnp.where stay NaN-free.
    safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
    hue_sextant = jnp.where(
        value == red,
        (green - blue) / safe_chroma,
        jnp.where(
            value == green, 2.0 + (blue - red) / safe_chroma, 4.0 + (red - green) / safe_chroma
        ),
    )
    hue = jnp.where(chroma > 0, jnp.mod(hue_sextant / 6.0, 1.0), 0.0)
    return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(image: ArrayLike) -> jax.Array:
    """Inverse of :func:`rgb_to_hsv`.

    Uses the piecewise-linear form ``f(n) = V - V S clip(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 H) mod 6`` and n = 5, 3, 1 for R, G, B, which needs no per-sextant selects.

    Args:
      image: [..., 3] float HSV, each channel in [0, 1].

    Returns:
      [..., 3] float RGB.

    >>> hsv_to_rgb(jnp.array([2 / 3, 1.0, 1.0])).tolist()
    [0.0, 0.0, 1.0]
    """
    image = jnp.asarray(image)
    hue, saturation, value = image[..., 0:1], image[..., 1:2], image[..., 2:3]
    n = jnp.asarray([5.0, 3.0, 1.0], image.dtype)
    k = jnp.mod(n + 6.0 * hue, 6.0)
    return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_brightness(image: ArrayLike, factor: ArrayLike) -> jax.Array:
    """Multiplies by ``factor`` (blend with black) and clips to [0, 1].

    Args:
      image: [H, W, C] float image in [0, 1].
      factor: scalar >= 0; 1 leaves the image unchanged.

    Returns:
      [H, W, C] float image in [0, 1].

    >>> adjust_brightness(jnp.full((1, 1, 1), 0.6), 2.0).tolist()
    [[[1.0]]]
    """
    image = jnp.asarray(image)
    return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: ArrayLike, factor: ArrayLike) -> jax.Array:
    """Blends with the image's mean grey level and clips to [0, 1].

    Args:
      image: [H, W, C] float image in [0, 1], C in {1, 3}.
      factor: scalar >= 0; 1 leaves the image unchanged, 0 gives a flat grey image.

    Returns:
      [H, W, C] float image in [0, 1].

    >>> adjust_contrast(jnp.array([[[0.0]], [[1.0]]]), 0.0).tolist()
    [[[0.5]], [[0.5]]]
    """
    image = jnp.asarray(image)
    mean_grey = jnp.mean(to_grayscale(image)[..., 0])
    return jnp.clip(factor * image + (1.0 - factor) * mean_grey, 0.0, 1.0)


def adjust_saturation(image: ArrayLike, factor: ArrayLike) -> jax.Array:
    """Blends with the image's grey version and clips to [0, 1].

    Args:
      image: [H, W, 3] float RGB in [0, 1].
      factor: scalar >= 0; 1 leaves the image unchanged, 0 gives its grey version.

    Returns:
      [H, W, 3] float image in [0, 1].

    >>> adjust_saturation(jnp.array([[[1.0, 0.0, 0.0]]]), 1.0).tolist()
    [[[1.0, 0.0, 0.0]]]
    """
    image = jnp.asarray(image)
    return jnp.clip(factor * image + (1.0 - factor) * to_grayscale(image), 0.0, 1.0)


def adjust_hue(image: ArrayLike, shift: ArrayLike) -> jax.Array:
    """Rotates the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space.

    Args:
      image: [..., 3] float RGB in [0, 1].
      shift: scalar hue offset in turns; 0 leaves the image unchanged (up to rounding).

    Returns:
      [..., 3] float RGB in [0, 1].

    >>> adjust_hue(jnp.array([1.0, 0.0, 0.0]), 1 / 3).round(4).tolist()  # red -> green
    [0.0, 1.0, 0.0]
    """
    hsv = rgb_to_hsv(image)
    hue = jnp.mod(hsv[..., 0:1] + shift, 1.0)
    rotated = hsv_to_rgb(jnp.concatenate([hue, hsv[..., 1:]], axis=-1))
    return jnp.clip(rotated, 0.0, 1.0)


def color_jitter(rng: ArrayLike, image: ArrayLike, *, strength: float) -> jax.Array:
    """torchvision ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with SimCLR's strength ``s``.

    Brightness, contrast and saturation factors are drawn from ``U[max(0, 1 - 0.8 s), 1 + 0.8 s]``
    and the hue shift from ``U[-0.2 s, 0.2 s]``; the ops run in a random order, each clipping to
    [0, 1]. A 1-channel image gets brightness and contrast only, since saturation and hue have
    no meaning without colour.

    Args:
      rng: PRNG key.
      image: [H, W, C] float image in [0, 1], C in {1, 3}.
      strength: SimCLR colour strength ``s`` (static), e.g. 0.5 for CIFAR, 1.0 for ImageNet.

    Returns:
      [H, W, C] float image in [0, 1].

    >>> image = jnp.full((4, 4, 3), 0.5)
    >>> color_jitter(jax.random.key(0), image, strength=0.0).round(5).tolist() == image.tolist()
    True

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = as_image(image, "color_jitter")
    return _color_jitter_from_uniforms(
        jax.random.uniform(rng, (_JITTER_UNIFORMS,)), image, strength
    )


def _color_jitter_from_uniforms(
    uniforms: jax.Array, image: jax.Array, strength: float
) -> jax.Array:
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"color_jitter expects 1 or 3 channels; got {channels}.")
    factor_u, order_u = jnp.split(uniforms, 2)

    def factor(u: jax.Array, spread: float) -> jax.Array:
        low = max(0.0, 1.0 - spread)
        return low + (1.0 + spread - low) * u

    brightness = factor(factor_u[0], 0.8 * strength)
    contrast = factor(factor_u[1], 0.8 * strength)
    saturation = factor(factor_u[2], 0.8 * strength)
    hue_shift = 0.2 * strength * (2.0 * factor_u[3] - 1.0)
    ops: list[Callable[[jax.Array], jax.Array]] = [
        lambda x: adjust_brightness(x, brightness),
        lambda x: adjust_contrast(x, contrast),
    ]
    if channels == 3:
        ops += [
            lambda x: adjust_saturation(x, saturation),
            lambda x: adjust_hue(x, hue_shift),
        ]

    # argsort of i.i.d. uniforms is a uniform random permutation, and compiles far faster than
    # jax.random.permutation's shuffle.
    order = jnp.argsort(order_u[: len(ops)])
    # A loop rather than an unrolled sequence traces each op once instead of once per step.
    return jax.lax.fori_loop(
        0, len(ops), lambda step, x: jax.lax.switch(order[step], ops, x), image
    )


def solarize(image: ArrayLike, threshold: float = 128 / 255) -> jax.Array:
    """Inverts the pixels at or above ``threshold``: [H, W, C] float in [0, 1] -> same.

    The default is torchvision's ``RandomSolarize(threshold=128)`` on 8-bit images (BYOL's and
    MoCo v3's second view).

    >>> [round(float(v), 4) for v in solarize(jnp.array([[[0.2], [0.6]]])).ravel()]
    [0.2, 0.4]
    """
    image = jnp.asarray(image)
    return jnp.where(image >= threshold, 1.0 - image, image)
