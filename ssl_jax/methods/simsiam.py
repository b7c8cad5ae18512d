"""SimSiam: a predictor on one view matches the other view's projection, under stop-gradient.

No target network and no negatives; the predictor's learning rate may stay fixed (optim).
"""

from __future__ import annotations

from etils import epy
from jax import lax

from ssl_jax import losses
from ssl_jax.core.method import LossAux
from ssl_jax.methods import siamese

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


def _loss(params, state, batch, rng, axis_name, *, model, aug_kwargs):
    views = siamese.two_views(rng, batch["image"], axis_name, aug_kwargs)
    ((features, z1, p1), (_, z2, p2)), batch_stats = siamese.apply_per_view(
        model, params, state.batch_stats, views
    )
    loss = 0.5 * (
        losses.simsiam_loss(p1, lax.stop_gradient(z2), axis_name=axis_name)
        + losses.simsiam_loss(p2, lax.stop_gradient(z1), axis_name=axis_name)
    )
    mutated = {"batch_stats": batch_stats}
    return loss, LossAux(mutated, {"loss": loss}, siamese.probe_features(features))


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings SimSiam cannot train with (field ranges: config_checks)."""
    del device_count
    siamese.validate_batch(config, global_batch_size)  # BN over one example is constant


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """SimSiam's functions (model, head, predictor, augment fields)."""
    del total_steps  # no schedule of its own
    return siamese.make_method(config, image_size, bn_axis_name, loss=_loss, with_predictor=True)
