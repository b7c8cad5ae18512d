"""DINO: a student matches an EMA teacher's centred, sharpened distribution over K prototypes.

Multi-crop: two global views (the training size) and ``dino.num_local_crops`` local ones
(``dino.local_crop_size``); the teacher sees the global views only, the student all of them.
The teacher (parameters, BN statistics) and the center live in ``TrainState.extra``: the center
moves in the step from the teacher's outputs over the global batch, the teacher once per
optimiser step by the cosine momentum. The teacher's temperature warms up linearly and the
student's last layer gets no gradient for the first ``dino.freeze_last_layer_fraction`` of the
run, both functions of the restored step.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from etils import epy
from jax import lax

from ssl_jax import losses
from ssl_jax.core.method import LossAux, Method
from ssl_jax.methods.moco import ema_update, momentum_at
from ssl_jax.models import build_encoder
from ssl_jax.vision import augment
from ssl_jax.vision.augment import augment_kwargs

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


class DinoHead(nn.Module):
    """MLP (GELU) → bottleneck → L2-normalise → weight-normalised linear layer to K, no bias.

    ``norm_last_layer``: the last layer's columns have norm 1 (DINO's fixed ``weight_g``);
    otherwise a learned per-output scale ``last_layer_scale``.
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    norm_last_layer: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.truncated_normal(0.02)
        for _ in range(self.num_layers - 1):
            x = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=init)(x))
        x = nn.Dense(self.bottleneck_dim, dtype=self.dtype, kernel_init=init)(x)
        x = losses.l2_normalize(x.astype(jnp.float32))
        direction = self.param(
            "last_layer", nn.initializers.lecun_normal(), (self.bottleneck_dim, self.out_dim)
        )
        weight = direction / jnp.linalg.norm(direction, axis=0, keepdims=True)
        if not self.norm_last_layer:
            weight = weight * self.param("last_layer_scale", nn.initializers.ones, (self.out_dim,))
        return x @ weight


class DinoModel(nn.Module):
    """Encoder → DINO head; returns (features, logits [B, K])."""

    encoder: nn.Module
    head: DinoHead

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = True):
        features, _ = self.encoder(images, train=train)
        return features, self.head(features)


def build_model(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> DinoModel:
    dtype = jnp.dtype(config.get("dtype", "float32"))
    d = config.dino
    head = DinoHead(
        out_dim=d.out_dim, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
        num_layers=d.num_layers, norm_last_layer=d.norm_last_layer, dtype=dtype,
    )  # fmt: skip
    return DinoModel(encoder=build_encoder(config.model, bn_axis_name, dtype), head=head)


def view_settings(config: ml_collections.ConfigDict, image_size: int) -> list[dict[str, Any]]:
    """``simclr_augment`` keywords of every view: 2 global (the second with
    ``augment.second_view``), then the local ones (smaller size and crops, their own blur)."""
    first = augment_kwargs(config, image_size)
    second = {**first, **first.pop("second_view")}
    second.pop("second_view", None)
    d = config.dino
    local = dict(
        first, out_size=d.local_crop_size, crop_scale=tuple(d.local_crop_scale),
        blur_prob=d.local_blur_prob, solarize_prob=0.0,
    )  # fmt: skip
    return [first, second] + [local] * d.num_local_crops


def teacher_temperature(step, *, start: float, end: float, warmup_steps: int) -> jax.Array:
    """Linear from ``start`` to ``end`` over ``warmup_steps``, then ``end`` (DINO's warm-up)."""
    if warmup_steps <= 0:
        return jnp.asarray(end, jnp.float32)
    progress = jnp.minimum(step / warmup_steps, 1.0)
    return start + (end - start) * progress


def _apply(model, variables, images, train: bool = True):
    """``model`` on a group of same-size views; returns (outputs, new batch_stats)."""
    outputs, updates = model.apply(variables, images, train=train, mutable=["batch_stats"])
    return outputs, updates.get("batch_stats", variables["batch_stats"])


def forward_by_size(model, params, batch_stats, views, num_global: int):
    """Features and outputs per view (multi-crop): one pass over the global views, one over the
    local ones, so each pass has one image size and BatchNorm normalises each size on its own;
    returns (features, outputs, new batch_stats)."""
    groups = [views[:num_global], views[num_global:]]
    features, logits = [], []
    for group in filter(None, groups):
        (f, z), batch_stats = _apply(
            model, {"params": params, "batch_stats": batch_stats}, jnp.concatenate(group, 0)
        )
        features += jnp.split(f, len(group))
        logits += jnp.split(z, len(group))
    return features, logits, batch_stats


def _freeze_last_layer(params, frozen: jax.Array):
    """``params`` with the head's last layer under stop_gradient while ``frozen``."""
    head = dict(params["head"])
    for name in ("last_layer", "last_layer_scale"):
        if name in head:
            head[name] = jnp.where(frozen, lax.stop_gradient(head[name]), head[name])
    return {**params, "head": head}


def _loss(params, state, batch, rng, axis_name, *, model, views, settings):
    images = batch["image"]
    n = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    crops = augment.multi_crop_views(rng, images, views, example_ids=first + jnp.arange(n))
    student_params = _freeze_last_layer(params, state.step < settings["freeze_steps"])
    features, student, batch_stats = forward_by_size(
        model, student_params, state.batch_stats, crops, 2
    )
    extra = state.extra
    _, teacher, teacher_batch_stats = forward_by_size(
        model, extra["teacher_params"], extra["teacher_batch_stats"], crops[:2], 2
    )
    teacher = [lax.stop_gradient(t) for t in teacher]
    temperature = teacher_temperature(
        state.step, start=settings["warmup_teacher_temp"], end=settings["teacher_temp"],
        warmup_steps=settings["teacher_temp_warmup_steps"],
    )  # fmt: skip
    loss = losses.dino_loss(
        student, teacher, extra["center"], student_temp=settings["student_temp"],
        teacher_temp=temperature, axis_name=axis_name,
    )  # fmt: skip
    center = losses.dino_center(
        teacher, extra["center"], momentum=settings["center_momentum"], axis_name=axis_name
    )
    mutated = {
        "batch_stats": batch_stats,
        "extra": dict(extra, teacher_batch_stats=teacher_batch_stats, center=center),
    }
    metrics = {"loss": loss, "teacher_temp": temperature}
    return loss, LossAux(mutated, metrics, lax.stop_gradient(features[0].astype(jnp.float32)))


def _after_update(state, *, momentum_fn):
    # As BYOL: the step just taken is ``state.step - 1`` from 0, its momentum the schedule's.
    teacher = ema_update(state.extra["teacher_params"], state.params, momentum_fn(state.step - 1))
    return state.replace(extra=dict(state.extra, teacher_params=teacher))


def init(rng, sample_batch, *, model: DinoModel) -> dict[str, Any]:
    images = jnp.asarray(sample_batch["image"], jnp.float32) / 255.0
    variables = model.init(rng, images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    extra = {
        "teacher_params": params,
        "teacher_batch_stats": batch_stats,
        "center": jnp.zeros(model.head.out_dim, jnp.float32),
    }
    return {"params": params, "batch_stats": batch_stats, "extra": extra}


def encode(variables, images, *, model: DinoModel) -> jax.Array:
    """Evaluation features: the student's backbone (the teacher's is in ``extra``)."""
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _ = model.apply(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        images, train=False,
    )  # fmt: skip
    return features


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings DINO cannot train with (ranges: config_checks)."""
    del global_batch_size, device_count
    d = config.dino
    if config.model.name.startswith("vit") and d.num_local_crops:
        patch = config.model.patch_size
        if d.local_crop_size % patch:
            raise ValueError(
                f"dino.local_crop_size={d.local_crop_size} must divide by model.patch_size="
                f"{patch} (the ViT cuts local crops into whole patches)."
            )


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """DINO's functions (model, dino, augment fields); schedules over ``total_steps``."""
    d = config.dino
    steps = max(total_steps or 1, 1)
    settings = dict(
        student_temp=d.student_temp, teacher_temp=d.teacher_temp,
        warmup_teacher_temp=d.warmup_teacher_temp, center_momentum=d.center_momentum,
        teacher_temp_warmup_steps=round(d.teacher_temp_warmup_fraction * steps),
        freeze_steps=round(d.freeze_last_layer_fraction * steps),
    )  # fmt: skip
    model = build_model(config, bn_axis_name)
    momentum_fn = functools.partial(
        momentum_at, base=d.momentum, total_steps=total_steps, cosine=d.momentum_cosine
    )
    return Method(
        name="dino",
        init=functools.partial(init, model=model),
        loss=functools.partial(
            _loss, model=model, views=view_settings(config, image_size), settings=settings
        ),
        encode=functools.partial(encode, model=model),
        after_update=functools.partial(_after_update, momentum_fn=momentum_fn),
    )
