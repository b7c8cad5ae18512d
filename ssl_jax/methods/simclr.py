"""SimCLR: two augmented views per image, encoder + projection head, NT-Xent over the global batch.

BatchNorm statistics are global (all devices, both views) so no device can cheat on its own batch,
except under gradient caching, where each chunk of one view is normalised on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from etils import epy
from jax import lax

from ssl_jax import gradcache, losses
from ssl_jax.core.method import LossAux, Method
from ssl_jax.methods import dino
from ssl_jax.models import ProjectionHead, build_encoder
from ssl_jax.vision import augment
from ssl_jax.vision.augment import augment_kwargs

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


class SimCLRModel(nn.Module):
    """Encoder followed by a projection head; returns (features [B, F], projections [B, D])."""

    encoder: nn.Module
    head: nn.Module

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
        features, _ = self.encoder(images, train=train)
        return features, self.head(features, train=train)


def build_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> SimCLRModel:
    dtype = jnp.dtype(config.get("dtype", "float32"))
    encoder = build_encoder(config.model, bn_axis_name, dtype)
    head = ProjectionHead(
        hidden_dim=config.head.hidden_dim,
        output_dim=config.head.output_dim,
        num_layers=config.head.num_layers,
        use_bn=config.head.get("use_bn", True),
        last_bn_scale=config.head.get("last_bn_scale", False),  # absent: older configs
        bn_axis_name=bn_axis_name,
        dtype=dtype,
    )
    return SimCLRModel(encoder=encoder, head=head)


# How NT-Xent's per-anchor terms add up. SimCLR's reference code takes loss_a + loss_b, the mean
# over the N first-view anchors plus the mean over the N second-view ones: twice the mean over
# all 2N anchors. Under LARS the factor matters where the trust ratio does not rescale the
# update (BN and bias parameters) and against weight decay.
REDUCTIONS = {"sum_over_views": 2.0, "mean": 1.0}


def _init(rng: jax.Array, sample_batch: dict[str, Any], *, model: SimCLRModel) -> dict[str, Any]:
    images = jnp.asarray(sample_batch["image"], jnp.float32) / 255.0
    variables = model.init(rng, images, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _loss(
    params: Any,
    state: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    axis_name: Hashable | None,
    *,
    model: SimCLRModel,
    temperature: float,
    aug_kwargs: dict[str, Any],
    loss_scale: float = REDUCTIONS["sum_over_views"],
    loss_chunk_size: int | None = None,
    grad_cache_chunk_size: int | None = None,
    chunk_model: SimCLRModel | None = None,
    view_settings: list[dict[str, Any]] | None = None,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    images = batch["image"]
    local_batch = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * local_batch
    if view_settings is not None:
        return _multi_crop_loss(
            params, state, images, rng, axis_name, model=model, temperature=temperature,
            views=view_settings, loss_scale=loss_scale, first=first,
        )  # fmt: skip
    # Global example indices key the augmentations, so results do not depend on the sharding.
    view1, view2 = augment.simclr_views(
        rng, images, example_ids=first + jnp.arange(local_batch), **aug_kwargs
    )
    views = jnp.concatenate([view1, view2])
    if grad_cache_chunk_size:
        if local_batch % grad_cache_chunk_size:
            raise ValueError(
                f"grad_cache_chunk_size={grad_cache_chunk_size} must divide the per-device "
                f"batch of {local_batch}."
            )
        features, projections, batch_stats = _apply_in_chunks(
            params, state.batch_stats, views, axis_name, model=chunk_model,
            chunk_size=grad_cache_chunk_size,
        )  # fmt: skip
    else:
        (features, projections), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            views,
            train=True,
            mutable=["batch_stats"],
        )
        batch_stats = updates["batch_stats"]
    z1, z2 = projections[:local_batch], projections[local_batch:]
    if loss_chunk_size is None:
        devices = 1 if axis_name is None else lax.axis_size(axis_name)
        loss_chunk_size = losses.auto_chunk_size(2 * local_batch, 2 * local_batch * devices)
    loss = loss_scale * losses.nt_xent(
        z1, z2, temperature=temperature, axis_name=axis_name, chunk_size=loss_chunk_size or None
    )
    probe_features = lax.stop_gradient(features[:local_batch].astype(jnp.float32))
    return loss, LossAux({"batch_stats": batch_stats}, {"loss": loss}, probe_features)


def _multi_crop_loss(params, state, images, rng, axis_name, *, model, temperature, views,
                     loss_scale, first):  # fmt: skip
    n = images.shape[0]
    crops = augment.multi_crop_views(rng, images, views, example_ids=first + jnp.arange(n))
    features, projections, batch_stats = dino.forward_by_size(
        model, params, state.batch_stats, crops, 2
    )
    loss = loss_scale * losses.multi_crop_nt_xent(
        projections, temperature=temperature, axis_name=axis_name
    )
    probe_features = lax.stop_gradient(features[0].astype(jnp.float32))
    return loss, LossAux({"batch_stats": batch_stats}, {"loss": loss}, probe_features)


def _apply_in_chunks(
    params: Any,
    batch_stats: Any,
    views: jax.Array,
    axis_name: Hashable | None,
    *,
    model: SimCLRModel,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array, Any]:
    """Features [2b, F], projections [2b, D] and new BN statistics of ``views`` under grad caching.

    Each chunk of ``chunk_size`` consecutive views is normalised with its own batch statistics,
    as one device with per-device BatchNorm would be. ``chunk_size`` divides b, so a chunk holds
    views of one kind only and the two views of an image never share statistics. The running
    statistics are the mean over the chunks of every device of each chunk's update (the
    full-batch mean, and the mean within-chunk variance), the same on every device.
    """

    def apply_chunk(params: Any, chunk: jax.Array) -> tuple[jax.Array, jax.Array, Any]:
        (features, projections), updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            chunk,
            train=True,
            mutable=["batch_stats"],
        )
        return features, projections, updates["batch_stats"]

    features, projections, chunk_stats = gradcache.chunked_apply(
        apply_chunk, params, views, chunk_size=chunk_size
    )
    new_stats = jax.tree.map(lambda x: jnp.mean(x, axis=0), chunk_stats)
    if axis_name is not None:
        new_stats = lax.pmean(new_stats, axis_name)
    return gradcache.merge_chunks(features), gradcache.merge_chunks(projections), new_stats


def _encode(variables: dict[str, Any], images: jax.Array, *, model: SimCLRModel) -> jax.Array:
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _ = model.apply(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        images,
        train=False,
    )
    return features


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError, naming the field to change, for settings SimCLR cannot train with.

    ``global_batch_size`` is split over ``device_count`` devices; per-device facts (the
    grad-cache chunks) are checked against each device's share.
    """
    low, high = config.augment.crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"augment.crop_scale={tuple(config.augment.crop_scale)} must be in (0, 1]."
        )
    if config.head.num_layers < 1:
        raise ValueError(f"head.num_layers={config.head.num_layers} must be >= 1.")
    if config.get("nt_xent_reduction", "mean") not in REDUCTIONS:
        raise ValueError(
            f"nt_xent_reduction={config.nt_xent_reduction!r}: use one of {sorted(REDUCTIONS)}."
        )
    for field in ("loss_chunk_size", "grad_cache_chunk_size"):
        value = config.get(field, None)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"{field}={value!r} must be None, 0 (off) or a positive integer.")
    grad_cache_chunk_size = config.get("grad_cache_chunk_size", None)
    augment.check_multi_crop(config)
    if _num_local_crops(config):
        for field in ("loss_chunk_size", "grad_cache_chunk_size"):
            if config.get(field, None):
                raise ValueError(
                    f"{field}={config.get(field)} works with two views only: set it to None "
                    f"or set multi_crop.num_local_crops=0."
                )
    per_device = global_batch_size // max(device_count, 1)
    if grad_cache_chunk_size and per_device % grad_cache_chunk_size:
        raise ValueError(
            f"grad_cache_chunk_size={grad_cache_chunk_size} must divide the per-device batch "
            f"of {per_device} (batch_size={global_batch_size} over {device_count} devices)."
        )


def _num_local_crops(config: ml_collections.ConfigDict) -> int:
    crops = config.get("multi_crop", None)  # absent: older configs
    return crops.num_local_crops if crops is not None else 0


def make(
    config: ml_collections.ConfigDict,
    image_size: int,
    bn_axis_name: str | None,
    *,
    total_steps: int | None = None,
) -> Method:
    """SimCLR's functions for ``config`` (model, head, augment and temperature fields).

    ``multi_crop.num_local_crops`` > 0 adds that many local views per image (multi-crop,
    ``augment.multi_crop_settings``), contrasted by ``losses.multi_crop_nt_xent``. Two optional
    fields trade compute for memory, with two views only: ``loss_chunk_size`` (None:
    ``losses.auto_chunk_size`` decides; 0: never chunk; k: k anchors per block of
    ``losses.nt_xent``; the same loss and gradient) and ``grad_cache_chunk_size`` (None or 0:
    off; k: the encoder runs on k views at a time, see ``gradcache``; exact gradients of the
    loss with BatchNorm statistics per chunk of k views, k dividing the per-device batch).

    >>> import numpy as np
    >>> from configs import simclr_fashion_mnist
    >>> method = make(simclr_fashion_mnist.get_config("runlocal"), image_size=28, bn_axis_name=None)
    >>> images = np.zeros((5, 28, 28, 1), np.uint8)
    >>> variables = jax.eval_shape(method.init, jax.random.key(0), {"image": images})  # shapes
    >>> jax.eval_shape(method.encode, variables, images).shape  # [b, features]
    (5, 64)
    """
    del total_steps  # SimCLR has no schedule of its own
    model = build_model(config, bn_axis_name)
    grad_cache_chunk_size = config.get("grad_cache_chunk_size", None)
    return Method(
        name="simclr",
        init=functools.partial(_init, model=model),
        loss=functools.partial(
            _loss,
            model=model,
            temperature=config.temperature,
            aug_kwargs=augment_kwargs(config, image_size),
            loss_scale=REDUCTIONS[config.get("nt_xent_reduction", "mean")],  # absent: older configs
            loss_chunk_size=config.get("loss_chunk_size", None),
            grad_cache_chunk_size=grad_cache_chunk_size,
            # Chunks are normalised on their own: their BatchNorm must not average over devices.
            chunk_model=build_model(config, None) if grad_cache_chunk_size else None,
            view_settings=augment.multi_crop_settings(config, image_size),
        ),
        encode=functools.partial(_encode, model=model),
    )
