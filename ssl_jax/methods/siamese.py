"""What BYOL, SimSiam, Barlow Twins and VICReg share: a two-view network without negatives.

Each view goes through encoder → projector (→ predictor) in a forward pass of its own, as in
every reference implementation, with BatchNorm statistics over the global batch of that view.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from etils import epy
from jax import lax

from ssl_jax.core.method import Method
from ssl_jax.models import ProjectionHead, build_encoder
from ssl_jax.vision import augment
from ssl_jax.vision.augment import augment_kwargs

with epy.lazy_imports():
    import ml_collections


class SiameseModel(nn.Module):
    """Encoder → projector (→ predictor); returns (features, projections, predictions or None)."""

    encoder: nn.Module
    head: nn.Module
    predictor: nn.Module | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = True, predict: bool = True):
        features, _ = self.encoder(images, train=train)
        projections = self.head(features, train=train)
        predictions = None
        if predict and self.predictor is not None:
            predictions = self.predictor(projections, train=train)
        return features, projections, predictions


def build_model(
    config: ml_collections.ConfigDict, bn_axis_name: str | None, *, with_predictor: bool
) -> SiameseModel:
    """The projector is ``config.head``, the predictor (BYOL, SimSiam) ``config.predictor``."""
    dtype = jnp.dtype(config.get("dtype", "float32"))
    head = config.head
    predictor = None
    if with_predictor:
        predictor = ProjectionHead(
            hidden_dim=config.predictor.hidden_dim, output_dim=head.output_dim,
            num_layers=config.predictor.num_layers, last_bn=config.predictor.last_bn,
            bn_axis_name=bn_axis_name, dtype=dtype,
        )  # fmt: skip
    return SiameseModel(
        encoder=build_encoder(config.model, bn_axis_name, dtype),
        head=ProjectionHead(
            hidden_dim=head.hidden_dim,
            output_dim=head.output_dim,
            num_layers=head.num_layers,
            use_bn=head.use_bn,
            last_bn=head.get("last_bn", True),
            last_bn_scale=head.last_bn_scale,
            bn_axis_name=bn_axis_name,
            dtype=dtype,
        ),  # fmt: skip
        predictor=predictor,
    )


def two_views(rng, images, axis_name: Hashable | None, aug_kwargs: dict[str, Any]):
    """(view1, view2) keyed by global example ids, so they do not depend on the sharding."""
    n = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    return augment.simclr_views(rng, images, example_ids=first + jnp.arange(n), **aug_kwargs)


def multi_crop_views(rng, images, axis_name: Hashable | None, settings: list[dict[str, Any]]):
    """``augment.multi_crop_views`` keyed by global example ids; views 0 and 1 are
    ``two_views``'."""
    n = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    return augment.multi_crop_views(rng, images, settings, example_ids=first + jnp.arange(n))


def apply_per_view(model, params, batch_stats, views, *, predict: bool = True):
    """``model`` on each view in turn; the running statistics take each view's update in turn.

    Returns ([(features, projections, predictions)] per view, new batch_stats).
    """
    outputs = []
    for view in views:
        output, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, view, train=True,
            mutable=["batch_stats"], predict=predict,
        )  # fmt: skip
        batch_stats = updates["batch_stats"]
        outputs.append(output)
    return outputs, batch_stats


def probe_features(features: jax.Array) -> jax.Array:
    return lax.stop_gradient(features.astype(jnp.float32))


def init(rng, sample_batch, *, model: SiameseModel, with_target: bool = False) -> dict[str, Any]:
    """Parameters and BN statistics; with a target, an EMA copy of both in ``extra``."""
    images = jnp.asarray(sample_batch["image"], jnp.float32) / 255.0
    variables = model.init(rng, images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    extra = {"target_params": params, "target_batch_stats": batch_stats} if with_target else {}
    return {"params": params, "batch_stats": batch_stats, "extra": extra}


def encode(variables, images, *, model: SiameseModel) -> jax.Array:
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _, _ = model.apply(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        images, train=False, predict=False,
    )  # fmt: skip
    return features


def validate_batch(config: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Batch statistics of a single example are undefined (variance, N - 1)."""
    if global_batch_size < 2:
        raise ValueError(
            f"batch_size={global_batch_size}: {config.method} takes statistics over the batch; "
            "use at least 2."
        )


def make_method(
    config: ml_collections.ConfigDict,
    image_size: int,
    bn_axis_name: str | None,
    *,
    loss: Callable[..., Any],
    with_predictor: bool,
    with_target: bool = False,
    after_update: Callable[[Any], Any] | None = None,
    **loss_kwargs: Any,
) -> Method:
    """A ``Method`` whose loss is ``loss(params, state, batch, rng, axis_name, model=...,
    aug_kwargs=..., **loss_kwargs)``."""
    model = build_model(config, bn_axis_name, with_predictor=with_predictor)
    extra = {} if after_update is None else {"after_update": after_update}
    return Method(
        name=config.method,
        init=functools.partial(init, model=model, with_target=with_target),
        loss=functools.partial(
            loss, model=model, aug_kwargs=augment_kwargs(config, image_size), **loss_kwargs
        ),
        encode=functools.partial(encode, model=model),
        **extra,
    )
