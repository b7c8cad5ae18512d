"""The SimCLR pipeline: one view of one image from a single random draw, and two views a batch.

Ops are composed from their ``*_from_uniforms`` forms; keys are derived from example ids.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ssl_jax.vision.augment._image import as_image, to_unit_float
from ssl_jax.vision.augment.blur import (
    _BLUR_KERNEL_FRACTION,
    _BLUR_SIGMA_RANGE,
    _BLUR_UNIFORMS,
    _gaussian_blur_from_uniforms,
)
from ssl_jax.vision.augment.color import (
    _JITTER_UNIFORMS,
    _color_jitter_from_uniforms,
    solarize,
    to_grayscale,
)
from ssl_jax.vision.augment.crop import (
    _CROP_RATIO,
    _CROP_UNIFORMS,
    _crop_box_from_uniforms,
    crop_and_resize,
)

# Each op is written as a function of uniforms drawn up front, so that the whole pipeline needs a
# single random draw: every separate jax.random call compiles its own Threefry (~0.4 s on CPU).
_GATE_UNIFORMS = 4  # flip, jitter, grayscale, blur coin flips


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
    solarize_prob: float = 0.0,
    flip: bool = True,
    crop: bool = True,
) -> jax.Array:
    """One SimCLR view of one image: crop, flip, colour jitter, grayscale, blur, solarize.

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
      solarize_prob: probability of solarization (BYOL and MoCo v3: 0.2 on the second view).
      flip: whether to flip left-right with probability 1/2.
      crop: False when ``image`` is already a random crop (cut on the host from the full
        image): it is only resized to ``out_size`` (if it is not that size already).

    Returns:
      [out_size, out_size, C] float32 in [0, 1].

    >>> image = jnp.zeros((16, 16, 3), jnp.uint8)
    >>> view = simclr_augment(jax.random.key(0), image, out_size=8)
    >>> view.shape, view.dtype
    ((8, 8, 3), dtype('float32'))

    Without colour ops a uint8 ramp comes out divided by 255, flipped for about half the keys:

    >>> ramp = jnp.tile(jnp.arange(0, 256, 51, dtype=jnp.uint8), (6, 1))[..., None].repeat(3, -1)
    >>> plain = dict(out_size=6, crop=False, jitter_prob=0.0, grayscale_prob=0.0)
    >>> for i in range(2):
    ...     row = simclr_augment(jax.random.key(i), ramp, **plain)[0, :, 0]
    ...     print([round(float(x), 2) for x in row])
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), appendix A.
    """
    image = to_unit_float(as_image(image, "simclr_augment"))
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
    if crop:
        box = _crop_box_from_uniforms(crop_u, height, width, crop_scale, _CROP_RATIO)
        image = crop_and_resize(image, box, out_size)
    elif (height, width) != (out_size, out_size):
        image = crop_and_resize(image, (0, 0, height, width), out_size)
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
    if solarize_prob > 0:
        # A draw of its own, so that views without solarization keep their randomness.
        gate = jax.random.uniform(jax.random.fold_in(rng, 1), ())
        image = jnp.where(gate < solarize_prob, solarize(image), image)
    # Resampling and blurring are convex combinations; the clip only removes rounding overshoot.
    return jnp.clip(image, 0.0, 1.0)


def simclr_views(
    rng: ArrayLike,
    images: ArrayLike,
    *,
    example_ids: ArrayLike | None = None,
    second_view: Mapping[str, Any] | None = None,
    **augment_kwargs: Any,
) -> tuple[jax.Array, jax.Array]:
    """Two independent SimCLR views of every image in a batch, alike or asymmetric.

    Example i is augmented with ``key_i = fold_in(rng, example_ids[i])``, view 1 with
    ``fold_in(key_i, 0)`` and view 2 with ``fold_in(key_i, 1)``. Keys are derived from the
    example's id rather than split by batch position so that an example's views do not depend on
    how the batch is sharded: inside shard_map each device passes the GLOBAL indices of its
    examples and gets exactly the views a single device would make for the whole batch.

    Outside a jitted step, wrap it in ``jax.jit`` (keyword arguments bound with
    ``functools.partial``): called op by op it dispatches every vmapped op separately, about
    3x slower on CPU even for a handful of images.

    Args:
      rng: PRNG key, e.g. ``fold_in(base_key, step)``.
      images: [B, H, W, C] uint8 or float in [0, 1], C in {1, 3}; or [B, 2, H, W, C], two
        crops per example already cut on the host (``images.train_batches`` of a resized
        dataset), which get every op but the crop.
      example_ids: [B] integer ids (default ``arange(B)``), unique within a step.
      second_view: keyword arguments of :func:`simclr_augment` that differ for view 2, e.g.
        ``{"blur_prob": 0.1, "solarize_prob": 0.2}`` (BYOL, MoCo v3); None or empty: the same.
        The keys are the same either way, so equal settings give equal views.
      **augment_kwargs: keyword arguments of :func:`simclr_augment`; ``out_size`` defaults to H.

    Returns:
      ``(view1, view2)``, each [B, out_size, out_size, C] float32 in [0, 1].

    Raises:
      ValueError: if ``images`` is not rank 4 (or 5 with 2 views) or ``example_ids`` is not of
        shape [B].

    >>> images = jax.random.randint(jax.random.key(1), (2, 8, 8, 3), 0, 256).astype(jnp.uint8)
    >>> view1, view2 = simclr_views(jax.random.key(0), images, example_ids=jnp.array([5, 6]))
    >>> view1.shape, view2.dtype
    ((2, 8, 8, 3), dtype('float32'))
    >>> bool(jnp.array_equal(view1, view2))  # an example's two views differ
    False
    >>> swapped, _ = simclr_views(jax.random.key(0), images[::-1], example_ids=jnp.array([6, 5]))
    >>> bool(jnp.array_equal(swapped[0], view1[1]))  # example 6's view, wherever it sits
    True
    """
    images = jnp.asarray(images)
    host_crops = images.ndim == 5 and images.shape[1] == 2
    if images.ndim != 4 and not host_crops:
        raise ValueError(
            f"simclr_views expects images [B, H, W, C] or [B, 2, H, W, C]; got {images.shape}."
        )
    batch_size = images.shape[0]
    if example_ids is None:
        example_ids = jnp.arange(batch_size)
    example_ids = jnp.asarray(example_ids)
    if example_ids.shape != (batch_size,):
        raise ValueError(
            f"simclr_views expects example_ids of shape ({batch_size},); got {example_ids.shape}."
        )
    augment_kwargs.setdefault("out_size", images.shape[-3])
    if host_crops:
        augment_kwargs["crop"] = False

    # Both views go through one flat vmap over [2B] (rows 2i, 2i + 1 are example i's views), so
    # the pipeline is traced and compiled once; each fold_in is likewise traced once, batched.
    example_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)
    view_ids = jnp.tile(jnp.arange(2), batch_size)
    keys = jax.vmap(jax.random.fold_in)(jnp.repeat(example_keys, 2, axis=0), view_ids)
    augment = functools.partial(simclr_augment, **augment_kwargs)
    if second_view:
        unknown = set(second_view) - set(inspect.signature(simclr_augment).parameters)
        if unknown or "out_size" in second_view or "crop" in second_view:
            raise ValueError(f"simclr_views second_view: unknown or fixed fields {unknown}.")
        pairs = keys.reshape(batch_size, 2, *keys.shape[1:])
        second = functools.partial(simclr_augment, **{**augment_kwargs, **second_view})
        first_images, second_images = (images[:, 0], images[:, 1]) if host_crops else (images,) * 2
        return jax.vmap(augment)(pairs[:, 0], first_images), jax.vmap(second)(
            pairs[:, 1], second_images
        )
    # Host crops are already [B, 2, ...] in the rows' order (2i, 2i + 1).
    flat = images.reshape(-1, *images.shape[2:]) if host_crops else jnp.repeat(images, 2, axis=0)
    views = jax.vmap(augment)(keys, flat)
    views = views.reshape(batch_size, 2, *views.shape[1:])
    return views[:, 0], views[:, 1]


def multi_crop_views(
    rng: ArrayLike,
    images: ArrayLike,
    views: Sequence[Mapping[str, Any]],
    *,
    example_ids: ArrayLike | None = None,
) -> list[jax.Array]:
    """Any number of views per image, each with its own :func:`simclr_augment` keywords.

    Multi-crop (SwAV, DINO): e.g. two global views at the training size and N local ones at a
    smaller ``out_size`` from smaller ``crop_scale``. View ``v`` of example ``i`` uses
    ``fold_in(fold_in(rng, example_ids[i]), v)``, the keys of :func:`simclr_views` for views 0
    and 1, so an example's views do not depend on the sharding. Every view of a group shares
    its shape, so a step compiles once.

    With host crops, ``images`` [B, G, H, W, C] (``images.train_batches`` of a resized
    dataset cuts G = 2 crops from the full image), view ``v < G`` is crop ``v`` with every op
    but the crop, and each later view is cut on the device from crop ``v mod G`` at its own
    ``crop_scale``, so local crops' areas are fractions of a global crop, not of the original.

    Args:
      rng: PRNG key.
      images: [B, H, W, C] uint8 or float in [0, 1], or host crops [B, G, H, W, C].
      views: one dict of :func:`simclr_augment` keywords per view (``out_size`` defaults to H).
      example_ids: [B] integer ids (default ``arange(B)``), unique within a step.

    Returns:
      One float32 array [B, out_size_v, out_size_v, C] per view.

    >>> images = jax.random.randint(jax.random.key(1), (2, 16, 16, 1), 0, 256).astype(jnp.uint8)
    >>> small = dict(out_size=8, crop_scale=(0.05, 0.4))
    >>> out = multi_crop_views(jax.random.key(0), images, [{}, {}, small, small])
    >>> [v.shape[1] for v in out], bool(jnp.array_equal(out[2], out[3]))
    ([16, 16, 8, 8], False)
    >>> first, second = simclr_views(jax.random.key(0), images)
    >>> bool(jnp.array_equal(out[0], first)), bool(jnp.array_equal(out[1], second))
    (True, True)
    """
    images = jnp.asarray(images)
    if images.ndim not in (4, 5):
        raise ValueError(
            f"multi_crop_views expects images [B, H, W, C] or host crops [B, G, H, W, C]; got "
            f"{images.shape}."
        )
    crops = [images[:, g] for g in range(images.shape[1])] if images.ndim == 5 else None
    batch_size = images.shape[0]
    if example_ids is None:
        example_ids = jnp.arange(batch_size)
    example_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.asarray(example_ids))
    out = []
    for index, kwargs in enumerate(views):
        source = images
        if crops is not None:
            source = crops[index % len(crops)]
            kwargs = {**kwargs, "crop": index >= len(crops)}
        kwargs = {"out_size": source.shape[1], **kwargs}
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(example_keys, index)
        out.append(jax.vmap(functools.partial(simclr_augment, **kwargs))(keys, source))
    return out


def augment_kwargs(config: Any, image_size: int) -> dict[str, Any]:
    """``simclr_views``' keywords from a config's ``augment`` fields, at ``image_size``."""
    aug = config.augment
    return dict(
        out_size=image_size,
        crop_scale=tuple(aug.crop_scale),
        jitter_strength=aug.jitter_strength,
        jitter_prob=aug.jitter_prob,
        grayscale_prob=aug.grayscale_prob,
        blur_prob=aug.blur_prob,
        solarize_prob=aug.get("solarize_prob", 0.0),
        flip=aug.flip,
        # Fields that differ for the second view (BYOL / MoCo v3's asymmetric blur, solarize).
        second_view=dict(aug.get("second_view", None) or {}),
    )


def multi_crop_settings(config: Any, image_size: int) -> list[dict[str, Any]] | None:
    """Every view's :func:`simclr_augment` keywords under a config's ``multi_crop`` fields: the
    two global views of :func:`augment_kwargs` (the second with ``augment.second_view``), then
    ``multi_crop.num_local_crops`` local ones at ``multi_crop.local_crop_size`` from
    ``multi_crop.local_crop_scale``. None without local crops (or without the fields)."""
    crops = config.get("multi_crop", None)
    if crops is None or not crops.num_local_crops:
        return None
    first = augment_kwargs(config, image_size)
    second_view = first.pop("second_view")
    second = {**first, **second_view}
    local = dict(first, out_size=crops.local_crop_size, crop_scale=tuple(crops.local_crop_scale))
    return [first, second] + [local] * crops.num_local_crops


def check_multi_crop(config: Any) -> None:
    """Raises ValueError, naming the field, for local crops a ViT cannot cut into patches."""
    crops = config.get("multi_crop", None)
    if crops is None or not crops.num_local_crops or not config.model.name.startswith("vit"):
        return
    if crops.local_crop_size % config.model.patch_size:
        raise ValueError(
            f"multi_crop.local_crop_size={crops.local_crop_size} must divide by "
            f"model.patch_size={config.model.patch_size} (the ViT cuts local crops into whole "
            "patches)."
        )
