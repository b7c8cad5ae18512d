"""SimCLR image augmentations as pure JAX functions of (key, image).

They have static shapes and no Python branching on traced values, so they run on device inside a
jitted or shard_mapped train step, one ``vmap`` over the batch.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

# ITU-R BT.601 luma weights, the ones torchvision and PIL use for "L" conversion.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# torchvision's RandomResizedCrop draws this many candidate boxes before falling back.
_CROP_ATTEMPTS = 10

# Each op is written as a function of uniforms drawn up front, so that the whole pipeline needs a
# single random draw: every separate jax.random call compiles its own Threefry (~0.4 s on CPU).
_CROP_UNIFORMS = 2 * _CROP_ATTEMPTS + 2  # areas, log-aspects, two offsets
_JITTER_UNIFORMS = 8  # four factors, four sort keys for the order
_BLUR_UNIFORMS = 1  # sigma
_GATE_UNIFORMS = 4  # flip, jitter, grayscale, blur coin flips

# Defaults from SimCLR (appendix A), shared by the single ops and the pipeline.
_CROP_RATIO = (3 / 4, 4 / 3)
_BLUR_SIGMA_RANGE = (0.1, 2.0)
_BLUR_KERNEL_FRACTION = 0.1


def _as_image(image: ArrayLike, name: str) -> jax.Array:
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"{name} expects one image [H, W, C]; got shape {image.shape}.")
    return image


def _to_unit_float(image: jax.Array) -> jax.Array:
    if image.dtype == jnp.uint8:
        return image.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1]; got dtype {image.dtype}.")
    return image.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Random resized crop.


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
    """
    image = _as_image(image, "crop_and_resize").astype(jnp.float32)
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

    >>> image = jnp.ones((16, 16, 3))
    >>> random_resized_crop(jax.random.key(0), image, out_size=8).shape
    (8, 8, 3)

    References:
      Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (the Inception crop);
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = _as_image(image, "random_resized_crop")
    height, width, _ = image.shape
    box = sample_crop_box(rng, height, width, scale, ratio)
    return crop_and_resize(image, box, out_size)


# ---------------------------------------------------------------------------------------------
# Colour.


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
    image = _as_image(image, "to_grayscale")
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
    image = _as_image(image, "color_jitter")
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


# ---------------------------------------------------------------------------------------------
# Blur.


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
    image = _as_image(image, "gaussian_blur")
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


# ---------------------------------------------------------------------------------------------
# The SimCLR pipeline.


def simclr_augment(
    rng: ArrayLike,
    image: ArrayLike,
    *,
    out_size: int,
    crop_scale: Sequence[float] = (0.08, 1.0),
    jitter_strength: float = 0.5,
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.0,
    flip: bool = True,
) -> jax.Array:
    """One SimCLR view of one image: crop, flip, colour jitter, grayscale, blur.

    Each random op is computed and then kept or discarded with ``jnp.where``, so the function
    has no traced control flow (under ``vmap`` a ``lax.cond`` would evaluate both sides anyway).
    All randomness comes from one draw on ``rng``, so the ops' random parameters differ from
    those of the single-op functions called with the same key.

    Args:
      rng: PRNG key.
      image: [H, W, C] uint8 (divided by 255) or float in [0, 1], C in {1, 3}.
      out_size: side of the square output (static).
      crop_scale: area-fraction range of the random resized crop.
      jitter_strength: SimCLR colour strength ``s``.
      jitter_prob: probability of colour jitter.
      grayscale_prob: probability of grayscale (colour images only).
      blur_prob: probability of Gaussian blur (SimCLR uses 0.5 on ImageNet, none on CIFAR).
      flip: whether to flip left-right with probability 1/2.

    Returns:
      [out_size, out_size, C] float32 in [0, 1].

    >>> image = jnp.zeros((16, 16, 3), jnp.uint8)
    >>> view = simclr_augment(jax.random.key(0), image, out_size=8)
    >>> view.shape, view.dtype
    ((8, 8, 3), dtype('float32'))

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = _to_unit_float(_as_image(image, "simclr_augment"))
    channels = image.shape[-1]
    # One draw at fixed offsets: a single Threefry to compile, and changing one probability does
    # not change the other ops' randomness.
    uniforms = jax.random.uniform(
        rng, (_GATE_UNIFORMS + _CROP_UNIFORMS + _JITTER_UNIFORMS + _BLUR_UNIFORMS,)
    )
    gate_u, crop_u, jitter_u, blur_u = jnp.split(
        uniforms,
        list(itertools.accumulate([_GATE_UNIFORMS, _CROP_UNIFORMS, _JITTER_UNIFORMS])),
    )
    flip_gate, jitter_gate, gray_gate, blur_gate = gate_u

    height, width, _ = image.shape
    box = _crop_box_from_uniforms(crop_u, height, width, crop_scale, _CROP_RATIO)
    image = crop_and_resize(image, box, out_size)
    if flip:
        image = jnp.where(flip_gate < 0.5, image[:, ::-1], image)
    if jitter_prob > 0:
        jittered = _color_jitter_from_uniforms(jitter_u, image, jitter_strength)
        image = jnp.where(jitter_gate < jitter_prob, jittered, image)
    if grayscale_prob > 0 and channels == 3:
        image = jnp.where(gray_gate < grayscale_prob, to_grayscale(image), image)
    if blur_prob > 0:
        blurred = _gaussian_blur_from_uniforms(
            blur_u, image, _BLUR_SIGMA_RANGE, _BLUR_KERNEL_FRACTION
        )
        image = jnp.where(blur_gate < blur_prob, blurred, image)
    # Resampling and blurring are convex combinations; the clip only removes rounding overshoot.
    return jnp.clip(image, 0.0, 1.0)


def simclr_views(
    rng: ArrayLike,
    images: ArrayLike,
    *,
    example_ids: ArrayLike | None = None,
    **augment_kwargs: Any,
) -> tuple[jax.Array, jax.Array]:
    """Two independent SimCLR views of every image in a batch.

    Example i is augmented with ``key_i = fold_in(rng, example_ids[i])``, view 1 with
    ``fold_in(key_i, 0)`` and view 2 with ``fold_in(key_i, 1)``. Keys are derived from the
    example's id rather than split by batch position so that an example's views do not depend on
    how the batch is sharded: inside shard_map each device passes the GLOBAL indices of its
    examples and gets exactly the views a single device would make for the whole batch.

    Args:
      rng: PRNG key, e.g. ``fold_in(base_key, step)``.
      images: [B, H, W, C] uint8 or float in [0, 1], C in {1, 3}.
      example_ids: [B] integer ids (default ``arange(B)``), unique within a step.
      **augment_kwargs: keyword arguments of :func:`simclr_augment`; ``out_size`` defaults to H.

    Returns:
      ``(view1, view2)``, each [B, out_size, out_size, C] float32 in [0, 1].

    Raises:
      ValueError: if ``images`` is not rank 4 or ``example_ids`` is not of shape [B].

    >>> images = jnp.zeros((2, 8, 8, 3), jnp.uint8)
    >>> view1, view2 = simclr_views(jax.random.key(0), images)
    >>> view1.shape, view2.dtype
    ((2, 8, 8, 3), dtype('float32'))
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"simclr_views expects images [B, H, W, C]; got shape {images.shape}.")
    batch_size = images.shape[0]
    if example_ids is None:
        example_ids = jnp.arange(batch_size)
    example_ids = jnp.asarray(example_ids)
    if example_ids.shape != (batch_size,):
        raise ValueError(
            f"simclr_views expects example_ids of shape ({batch_size},); got {example_ids.shape}."
        )
    augment_kwargs.setdefault("out_size", images.shape[1])

    # Both views go through one flat vmap over [2B] (rows 2i, 2i + 1 are example i's views), so
    # the pipeline is traced and compiled once; each fold_in is likewise traced once, batched.
    example_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)
    view_ids = jnp.tile(jnp.arange(2), batch_size)
    keys = jax.vmap(jax.random.fold_in)(jnp.repeat(example_keys, 2, axis=0), view_ids)
    augment = functools.partial(simclr_augment, **augment_kwargs)
    views = jax.vmap(augment)(keys, jnp.repeat(images, 2, axis=0))
    views = views.reshape(batch_size, 2, *views.shape[1:])
    return views[:, 0], views[:, 1]
