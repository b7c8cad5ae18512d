"""MoCo v2 (momentum key encoder, queue of negatives, shuffle BN) and v3 (symmetric, no queue).

The key encoder, its BatchNorm statistics and the queue live in ``TrainState.extra``.
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

from ssl_jax import losses
from ssl_jax.core.method import LossAux, Method
from ssl_jax.models import ProjectionHead, build_encoder
from ssl_jax.vision import augment
from ssl_jax.vision.augment import augment_kwargs

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


class MoCoModel(nn.Module):
    """Encoder → projection head (→ predictor, v3 queries only)."""

    encoder: nn.Module
    head: nn.Module
    predictor: nn.Module | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = True, predict: bool = True):
        """Returns (features [B, F], output [B, D]); ``predict=False`` skips the predictor."""
        features, _ = self.encoder(images, train=train)
        output = self.head(features, train=train)
        if predict and self.predictor is not None:
            output = self.predictor(output, train=train)
        return features, output


def momentum_at(step: jax.Array, *, base: float, total_steps: int | None, cosine: bool):
    """EMA momentum after ``step`` optimiser steps: fixed, or 1 - (1 - base)(cos(pi t/T) + 1)/2."""
    if not cosine:
        return jnp.asarray(base, jnp.float32)
    progress = jnp.minimum(step / max(total_steps or 1, 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema_update(target: Any, online: Any, momentum: jax.Array) -> Any:
    """``momentum * target + (1 - momentum) * online``, leaf by leaf."""
    return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes keys [N, d] at ``pointer`` of queue [K, d] (K a multiple of N); returns both new."""
    queue = lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (pointer, 0))
    return queue, (pointer + keys.shape[0]) % queue.shape[0]


def _apply_in_groups(model, variables, images, num_groups: int, **kwargs):
    """BatchNorm statistics per group of ``images`` ("ghost" BN); running stats averaged."""

    def apply(group):
        return model.apply(variables, group, train=True, mutable=["batch_stats"], **kwargs)

    grouped = images.reshape(num_groups, -1, *images.shape[1:])
    (features, outputs), updates = jax.vmap(apply)(grouped)
    batch_stats = jax.tree.map(lambda x: jnp.mean(x, axis=0), updates.get("batch_stats", {}))
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    return (flat(features), flat(outputs)), batch_stats


def _gather(x: jax.Array, axis_name: Hashable | None) -> jax.Array:
    """The global batch's rows of ``x`` on every device, typed replicated (for the state)."""
    return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True, to="invarying")


def _local_rows(x: jax.Array, n: int, axis_name: Hashable | None) -> jax.Array:
    if axis_name is None:
        return x
    return lax.dynamic_slice_in_dim(x, lax.axis_index(axis_name) * n, n)


def shuffled_keys(key_fn, images, rng, num_groups: int, axis_name: Hashable | None):
    """Keys of ``images`` computed on a random permutation of the global batch, then restored.

    Shuffle BN: each example's key is normalised with statistics of a random group of the
    global batch (another device's share, or a ghost group on one device), never the group its
    query saw, so BN cannot leak which key matches which query.
    """
    n = images.shape[0]
    everything = _gather(images, axis_name)
    permutation = jax.random.permutation(rng, everything.shape[0])
    (_, keys), batch_stats = key_fn(_local_rows(everything[permutation], n, axis_name), num_groups)
    restored = jnp.zeros((everything.shape[0], keys.shape[1]), keys.dtype)
    restored = restored.at[permutation].set(_gather(keys, axis_name))
    return _local_rows(restored, n, axis_name), batch_stats


def _loss(params, state, batch, rng, axis_name, *, query_model, key_model, config, aug_kwargs):
    moco = config.moco
    images = batch["image"]
    n = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    aug_rng, shuffle_rng = jax.random.split(rng)
    view1, view2 = augment.simclr_views(
        aug_rng, images, example_ids=first + jnp.arange(n), **aug_kwargs
    )
    extra = state.extra
    groups = max(1, n // moco.bn_group_size) if moco.bn == "shuffle" else 1

    def queries(views, batch_stats):
        query_vars = {"params": params, "batch_stats": batch_stats}
        return _apply_in_groups(query_model, query_vars, views, groups)

    def keys(views, batch_stats, salt):
        key_vars = {"params": extra["key_params"], "batch_stats": batch_stats}

        def key_fn(views, num_groups):
            outputs, stats = _apply_in_groups(key_model, key_vars, views, num_groups, predict=False)
            return jax.tree.map(lax.stop_gradient, outputs), stats

        if moco.bn == "shuffle":
            return shuffled_keys(
                key_fn, views, jax.random.fold_in(shuffle_rng, salt), groups, axis_name
            )
        (_, k), stats = key_fn(views, 1)
        return k, stats

    temperature = config.temperature
    if moco.version == 2:
        (features, q), batch_stats = queries(view1, state.batch_stats)
        k, key_batch_stats = keys(view2, extra["key_batch_stats"], 0)
        loss = losses.info_nce(q, k, extra["queue"], temperature=temperature, axis_name=axis_name)
        queue, pointer = enqueue(extra["queue"], extra["queue_ptr"], _gather(k, axis_name))
        extra = dict(extra, queue=queue, queue_ptr=pointer)
    else:
        if moco.get("joint_view_bn", True):  # absent: a config from before the per-view form
            # Both views in one BatchNorm batch (one forward pass per encoder).
            (features, q), batch_stats = queries(jnp.concatenate([view1, view2]), state.batch_stats)
            features = features[:n]
            k, key_batch_stats = keys(jnp.concatenate([view2, view1]), extra["key_batch_stats"], 0)
            q1, q2, k2, k1 = q[:n], q[n:], k[:n], k[n:]
        else:
            # moco-v3 runs each view through its encoders on its own, so each view is
            # normalised with its own statistics; the running averages take both updates in turn.
            (features, q1), batch_stats = queries(view1, state.batch_stats)
            (_, q2), batch_stats = queries(view2, batch_stats)
            k1, key_batch_stats = keys(view1, extra["key_batch_stats"], 0)
            k2, key_batch_stats = keys(view2, key_batch_stats, 1)
        # The v3 paper scales each direction by 2 tau so the loss is insensitive to tau.
        loss = (
            2
            * temperature
            * (
                losses.info_nce(q1, k2, temperature=temperature, axis_name=axis_name)
                + losses.info_nce(q2, k1, temperature=temperature, axis_name=axis_name)
            )
        )
    if axis_name is not None and moco.bn == "shuffle":
        # Per-device statistics normalised the batch; the replicated running averages take
        # their mean so every device holds the same state.
        batch_stats, key_batch_stats = lax.pmean((batch_stats, key_batch_stats), axis_name)
    extra = dict(extra, key_batch_stats=key_batch_stats)
    mutated = {"batch_stats": batch_stats, "extra": extra}
    probe_features = lax.stop_gradient(features.astype(jnp.float32))
    return loss, LossAux(mutated, {"loss": loss}, probe_features)


def _after_update(state, *, momentum_fn):
    momentum = momentum_fn(state.step)
    key_params = ema_update(state.extra["key_params"], state.params, momentum)
    return state.replace(extra=dict(state.extra, key_params=key_params))


def _init(rng, sample_batch, *, model, queue_size: int, version: int):
    init_rng, queue_rng = jax.random.split(rng)
    images = jnp.asarray(sample_batch["image"], jnp.float32) / 255.0
    variables = model.init(init_rng, images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    extra = {"key_params": params, "key_batch_stats": batch_stats}
    if version == 2:
        _, projection = model.apply(variables, images[:1], train=False, predict=False)
        queue = jax.random.normal(queue_rng, (queue_size, projection.shape[-1]))
        extra.update(queue=losses.l2_normalize(queue), queue_ptr=jnp.zeros((), jnp.int32))
    return {"params": params, "batch_stats": batch_stats, "extra": extra}


def _encode(variables, images, *, model):
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _ = model.apply(variables, images, train=False, predict=False)
    return features


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError, naming the field to change, for settings MoCo cannot train with.

    ``global_batch_size`` is split over ``device_count`` devices; shuffle BN's ghost groups are
    checked against each device's share.
    """
    moco = config.moco
    per_device = global_batch_size // max(device_count, 1)
    if moco.bn == "shuffle" and (
        moco.bn_group_size < 1
        or (moco.bn_group_size < per_device and per_device % moco.bn_group_size)
    ):
        raise ValueError(
            f"moco.bn_group_size={moco.bn_group_size} must divide the per-device batch of "
            f"{per_device} (batch_size={global_batch_size} over {device_count} devices), or "
            "be at least that batch (one group per device)."
        )
    if moco.version not in (2, 3):
        raise ValueError(f"moco.version={moco.version} must be 2 or 3.")
    if moco.bn not in ("shuffle", "sync"):
        raise ValueError(f"moco.bn={moco.bn!r} must be 'shuffle' or 'sync'.")
    if moco.version == 2 and moco.queue_size % global_batch_size:
        raise ValueError(
            f"moco.queue_size={moco.queue_size} must be a multiple of batch_size="
            f"{global_batch_size}, e.g. {max(1, moco.queue_size // global_batch_size)} x that."
        )
    if not 0 <= moco.momentum < 1:
        raise ValueError(f"moco.momentum={moco.momentum} must be in [0, 1).")


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """MoCo's functions for ``config`` (model, head, predictor, moco, augment fields)."""
    moco = config.moco
    dtype = jnp.dtype(config.get("dtype", "float32"))
    # Shuffle BN needs per-device statistics; sync BN averages them over all devices.
    query_axis = bn_axis_name if moco.bn == "sync" else None

    def build(axis, with_predictor):
        head = config.head
        predictor = None
        if with_predictor:
            predictor = ProjectionHead(
                hidden_dim=config.predictor.hidden_dim, output_dim=head.output_dim,
                num_layers=config.predictor.num_layers,
                last_bn=config.predictor.get("last_bn", True), bn_axis_name=axis, dtype=dtype,
            )  # fmt: skip
        return MoCoModel(
            encoder=build_encoder(config.model, axis, dtype),
            head=ProjectionHead(
                hidden_dim=head.hidden_dim,
                output_dim=head.output_dim,
                num_layers=head.num_layers,
                use_bn=head.get("use_bn", True),
                last_bn_scale=head.get("last_bn_scale", False),
                bn_axis_name=axis,
                dtype=dtype,
            ),  # fmt: skip
            predictor=predictor,
        )

    # The key encoder is the query model applied to the EMA parameters (predictor skipped).
    query_model = key_model = build(query_axis, moco.version == 3)
    momentum_fn = functools.partial(
        momentum_at, base=moco.momentum, total_steps=total_steps, cosine=moco.momentum_cosine
    )
    return Method(
        name=f"moco_v{moco.version}",
        init=functools.partial(
            _init, model=query_model, queue_size=moco.queue_size, version=moco.version
        ),
        loss=functools.partial(
            _loss,
            query_model=query_model,
            key_model=key_model,
            config=config,
            aug_kwargs=augment_kwargs(config, image_size),
        ),  # fmt: skip
        encode=functools.partial(_encode, model=query_model),
        after_update=functools.partial(_after_update, momentum_fn=momentum_fn),
    )
