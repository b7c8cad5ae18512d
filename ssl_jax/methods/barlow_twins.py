"""Barlow Twins: the two views' cross-correlation over the global batch pushed to the identity.

Projector without an output BN: the loss standardises each view itself (``losses``).
"""

from __future__ import annotations

from etils import epy

from ssl_jax import losses
from ssl_jax.core.method import LossAux
from ssl_jax.methods import siamese

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


def _loss(params, state, batch, rng, axis_name, *, model, aug_kwargs, lambda_offdiag, scale):
    views = siamese.two_views(rng, batch["image"], axis_name, aug_kwargs)
    ((features, z1, _), (_, z2, _)), batch_stats = siamese.apply_per_view(
        model, params, state.batch_stats, views
    )
    loss = scale * losses.barlow_twins_loss(
        z1, z2, lambda_offdiag=lambda_offdiag, axis_name=axis_name
    )
    mutated = {"batch_stats": batch_stats}
    return loss, LossAux(mutated, {"loss": loss}, siamese.probe_features(features))


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings Barlow Twins cannot train with (ranges: config_checks)."""
    del device_count
    siamese.validate_batch(config, global_batch_size)


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """Barlow Twins' functions (model, head, barlow_twins, augment fields)."""
    del total_steps
    return siamese.make_method(
        config, image_size, bn_axis_name, loss=_loss, with_predictor=False,
        lambda_offdiag=config.barlow_twins.lambda_offdiag, scale=config.barlow_twins.scale,
    )  # fmt: skip
