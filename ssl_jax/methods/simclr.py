"""SimCLR: two augmented views per image, encoder + projection head, NT-Xent over the global batch.

BatchNorm statistics are global (all devices, both views) so no device can cheat on its own batch.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from ssl_jax import augment, losses
from ssl_jax.methods.base import Method
from ssl_jax.models import ProjectionHead, build_encoder


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
        bn_axis_name=bn_axis_name,
        dtype=dtype,
    )
    return SimCLRModel(encoder=encoder, head=head)


def augment_kwargs(config: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
    aug = config.augment
    return dict(
        out_size=image_size,
        crop_scale=tuple(aug.crop_scale),
        jitter_strength=aug.jitter_strength,
        jitter_prob=aug.jitter_prob,
        grayscale_prob=aug.grayscale_prob,
        blur_prob=aug.blur_prob,
        flip=aug.flip,
    )


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
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    images = batch["image"]
    local_batch = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * local_batch
    # Global example indices key the augmentations, so results do not depend on the sharding.
    view1, view2 = augment.simclr_views(
        rng, images, example_ids=first + jnp.arange(local_batch), **aug_kwargs
    )
    (_, projections), updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        jnp.concatenate([view1, view2]),
        train=True,
        mutable=["batch_stats"],
    )
    z1, z2 = projections[:local_batch], projections[local_batch:]
    loss = losses.nt_xent(z1, z2, temperature=temperature, axis_name=axis_name)
    return loss, ({"batch_stats": updates["batch_stats"]}, {"loss": loss})


def _encode(variables: dict[str, Any], images: jax.Array, *, model: SimCLRModel) -> jax.Array:
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _ = model.apply(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        images,
        train=False,
    )
    return features


def validate(config: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Raises ValueError, naming the field to change, for settings SimCLR cannot train with."""
    del global_batch_size
    low, high = config.augment.crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"augment.crop_scale={tuple(config.augment.crop_scale)} must be in (0, 1]."
        )
    if config.head.num_layers < 1:
        raise ValueError(f"head.num_layers={config.head.num_layers} must be >= 1.")


def make(
    config: ml_collections.ConfigDict,
    image_size: int,
    bn_axis_name: str | None,
    *,
    total_steps: int | None = None,
) -> Method:
    """SimCLR's functions for ``config`` (model, head, augment and temperature fields)."""
    del total_steps  # SimCLR has no schedule of its own
    model = build_model(config, bn_axis_name)
    return Method(
        name="simclr",
        init=functools.partial(_init, model=model),
        loss=functools.partial(
            _loss,
            model=model,
            temperature=config.temperature,
            aug_kwargs=augment_kwargs(config, image_size),
        ),
        encode=functools.partial(_encode, model=model),
    )
