"""VICReg: invariance between the views, variance and covariance of each over the global batch.

The three terms are logged beside the weighted loss.
"""

from __future__ import annotations

from etils import epy

from ssl_jax import losses
from ssl_jax.core.method import LossAux
from ssl_jax.methods import siamese

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


def _loss(params, state, batch, rng, axis_name, *, model, aug_kwargs, coeffs):
    views = siamese.two_views(rng, batch["image"], axis_name, aug_kwargs)
    ((features, x, _), (_, y, _)), batch_stats = siamese.apply_per_view(
        model, params, state.batch_stats, views
    )
    invariance, variance, covariance = losses.vicreg_terms(x, y, axis_name=axis_name)
    sim, std, cov = coeffs
    loss = sim * invariance + std * variance + cov * covariance
    metrics = {
        "loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance,
    }  # fmt: skip
    mutated = {"batch_stats": batch_stats}
    return loss, LossAux(mutated, metrics, siamese.probe_features(features))


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings VICReg cannot train with (ranges: config_checks)."""
    del device_count
    siamese.validate_batch(config, global_batch_size)  # covariance divides by N - 1


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """VICReg's functions (model, head, vicreg, augment fields)."""
    del total_steps
    v = config.vicreg
    return siamese.make_method(
        config, image_size, bn_axis_name, loss=_loss, with_predictor=False,
        coeffs=(v.sim_coeff, v.std_coeff, v.cov_coeff),
    )  # fmt: skip
