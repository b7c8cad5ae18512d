"""BYOL: an online network with a predictor regresses an EMA target network's projections.

The target (parameters and BN statistics) lives in ``TrainState.extra`` and moves once per step.
"""

from __future__ import annotations

import functools

from etils import epy
from jax import lax

from ssl_jax import losses
from ssl_jax.core.method import LossAux
from ssl_jax.methods import siamese
from ssl_jax.methods.moco import ema_update, momentum_at
from ssl_jax.vision import augment

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


def _loss(params, state, batch, rng, axis_name, *, model, aug_kwargs, view_settings=None):
    if view_settings is None:
        views = siamese.two_views(rng, batch["image"], axis_name, aug_kwargs)
    else:  # multi-crop: every view through the online network, the global ones through the target
        views = siamese.multi_crop_views(rng, batch["image"], axis_name, view_settings)
    online, batch_stats = siamese.apply_per_view(model, params, state.batch_stats, views)
    extra = state.extra
    target, target_batch_stats = siamese.apply_per_view(
        model, extra["target_params"], extra["target_batch_stats"], views[:2], predict=False
    )
    # byol_experiment.py: the two directions added, each the mean over the batch; with local
    # views, every view's prediction against each global target but its own (solo-learn).
    loss = sum(
        losses.byol_loss(online[v][2], lax.stop_gradient(target[t][1]), axis_name=axis_name)
        for t in range(2)
        for v in range(len(views))
        if v != t
    )
    mutated = {
        "batch_stats": batch_stats,
        "extra": dict(extra, target_batch_stats=target_batch_stats),
    }
    return loss, LossAux(mutated, {"loss": loss}, siamese.probe_features(online[0][0]))


def _after_update(state, *, momentum_fn):
    # The optimiser step just taken is step ``state.step - 1`` counted from 0: its momentum is
    # the schedule's value there (byol_experiment.py uses the step before incrementing it).
    momentum = momentum_fn(state.step - 1)
    target = ema_update(state.extra["target_params"], state.params, momentum)
    return state.replace(extra=dict(state.extra, target_params=target))


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings BYOL cannot train with (field ranges: config_checks)."""
    del global_batch_size, device_count  # BN needs nothing BYOL's fields do not give
    augment.check_multi_crop(config)


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """BYOL's functions (model, head, predictor, byol, augment fields).

    The target's momentum rises from ``byol.momentum`` to 1 by a cosine over ``total_steps``
    (``byol.momentum_cosine``), or stays fixed. ``multi_crop.num_local_crops`` > 0 adds local
    views, which only the online network sees.
    """
    momentum_fn = functools.partial(
        momentum_at, base=config.byol.momentum, total_steps=total_steps,
        cosine=config.byol.momentum_cosine,
    )  # fmt: skip
    return siamese.make_method(
        config, image_size, bn_axis_name, loss=_loss, with_predictor=True, with_target=True,
        after_update=functools.partial(_after_update, momentum_fn=momentum_fn),
        view_settings=augment.multi_crop_settings(config, image_size),
    )  # fmt: skip
