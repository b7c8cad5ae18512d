"""MAE: reconstruct the pixels of randomly masked patches from the visible ones.

One view per image (random resized crop and flip, no colour augmentation, as the reference).
The masks are drawn from the step's key and each image's global index
(``masking.mask_patches``), so they are the same on any device count and after a resume. The
features for kNN, linear evaluation and export are the encoder's [CLS] token on the whole image.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from etils import epy
from jax import lax

from ssl_jax import losses, masking
from ssl_jax.core.method import LossAux, Method
from ssl_jax.models import build_encoder
from ssl_jax.models.mae import MaskedAutoencoder, patchify
from ssl_jax.vision import augment
from ssl_jax.vision.augment import augment_kwargs

MODALITY = "image"

with epy.lazy_imports():
    import ml_collections


@dataclasses.dataclass(frozen=True)
class MaeMethod(Method):
    """A Method plus the masked forward pass the report draws reconstructions with.

    Attributes:
      predict: ``(variables, images uint8 [B, S, S, C], rng) -> (visible [B, K], masked
        [B, M], predictions [B, M, patch² x C])``, the masks as a step with key ``rng`` draws
        them for example ids ``0..B-1``.
      patch_size: the encoder's patch side.
      norm_pix: whether predictions are of standardised patches.
    """

    predict: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None
    patch_size: int = 16
    norm_pix: bool = True


def build_model(config: ml_collections.ConfigDict) -> MaskedAutoencoder:
    """The encoder is ``config.model`` (a ViT), the decoder ``config.mae``."""
    dtype = jnp.dtype(config.get("dtype", "float32"))
    mae = config.mae
    return MaskedAutoencoder(
        encoder=build_encoder(config.model, None, dtype),
        decoder_width=mae.decoder_width,
        decoder_depth=mae.decoder_depth,
        decoder_heads=mae.decoder_heads,
        decoder_mlp_dim=mae.decoder_mlp_dim,
        dtype=dtype,
    )


def one_view(rng, images, example_ids, aug_kwargs: dict[str, Any]) -> jax.Array:
    """Float32 [B, S, S, C] in [0, 1]: each image's view keyed by ``fold_in(rng, id)``.

    Images cut into two host crops ([B, 2, S, S, C]) take the first.
    """
    kwargs = {key: value for key, value in aug_kwargs.items() if key != "second_view"}
    if images.ndim == 5:
        images, kwargs["crop"] = images[:, 0], False
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)
    return jax.vmap(functools.partial(augment.simclr_augment, **kwargs))(keys, images)


def masks_for(rng, batch_size: int, example_ids, *, image_size: int, patch_size: int, ratio):
    """The step's ``(visible, masked)`` patch indices: the key MAE's loss draws them from."""
    count = (image_size // patch_size) ** 2
    return masking.mask_patches(
        jax.random.fold_in(rng, 1), batch_size, count, mask_ratio=ratio, example_ids=example_ids
    )


def _loss(params, state, batch, rng, axis_name, *, model, aug_kwargs, mask_ratio, norm_pix):
    images = batch["image"]
    n = images.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    example_ids = first + jnp.arange(n)
    views = one_view(jax.random.fold_in(rng, 0), images, example_ids, aug_kwargs)
    patch = model.encoder.patch_size
    visible, masked = masks_for(
        rng, n, example_ids, image_size=views.shape[1], patch_size=patch, ratio=mask_ratio
    )
    predictions, features = model.apply({"params": params}, views, visible, masked)
    targets = masking.gather_positions(patchify(views, patch), masked)
    loss = losses.mae_loss(predictions, targets, norm_pix=norm_pix, axis_name=axis_name)
    # The probe reads the [CLS] token of the masked forward pass, the only one the step runs.
    return loss, LossAux({}, {"loss": loss}, lax.stop_gradient(features))


def init(rng, sample_batch, *, model: MaskedAutoencoder, mask_ratio: float) -> dict[str, Any]:
    images = jnp.asarray(sample_batch["image"], jnp.float32) / 255.0
    visible, masked = masks_for(
        rng, images.shape[0], jnp.arange(images.shape[0]), image_size=images.shape[1],
        patch_size=model.encoder.patch_size, ratio=mask_ratio,
    )  # fmt: skip
    variables = model.init(rng, images, visible, masked)
    return {"params": variables["params"], "batch_stats": {}, "extra": {}}


def encode(variables, images, *, model: MaskedAutoencoder) -> jax.Array:
    """Evaluation features: the encoder's [CLS] token on every patch."""
    images = jnp.asarray(images, jnp.float32) / 255.0
    features, _ = model.encoder.apply({"params": variables["params"]["encoder"]}, images)
    return features


def predict(variables, images, rng, *, model: MaskedAutoencoder, mask_ratio: float):
    """``(visible, masked, predictions)`` for uint8 ``images`` [B, S, S, C] (the report's plot)."""
    images = jnp.asarray(images, jnp.float32) / 255.0
    n = images.shape[0]
    visible, masked = masks_for(
        rng, n, jnp.arange(n), image_size=images.shape[1],
        patch_size=model.encoder.patch_size, ratio=mask_ratio,
    )  # fmt: skip
    predictions, _ = model.apply({"params": variables["params"]}, images, visible, masked)
    return visible, masked, predictions


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError for settings MAE cannot train with (ranges: config_checks)."""
    del global_batch_size, device_count
    if not config.model.name.startswith("vit"):
        raise ValueError(
            f"model.name={config.model.name!r}: MAE drops patches from a ViT's input; use one of "
            "vit_tiny, vit_small, vit_base."
        )
    size = config.get("image_size", None)
    patch = config.model.patch_size
    if size:
        masking.patches_kept((size // patch) ** 2, config.mae.mask_ratio)
    if config.mae.norm_pix_loss and patch * patch < 2:
        raise ValueError("mae.norm_pix_loss needs patches of at least 2 pixels: raise patch_size.")


def make(config, image_size: int, bn_axis_name: str | None, *, total_steps: int | None = None):
    """MAE's functions (model, mae and augment fields)."""
    del bn_axis_name, total_steps  # no BatchNorm, no schedule of its own
    masking.patches_kept((image_size // config.model.patch_size) ** 2, config.mae.mask_ratio)
    model = build_model(config)
    mask_ratio = config.mae.mask_ratio
    return MaeMethod(
        name="mae",
        init=functools.partial(init, model=model, mask_ratio=mask_ratio),
        loss=functools.partial(
            _loss,
            model=model,
            aug_kwargs=augment_kwargs(config, image_size),
            mask_ratio=mask_ratio,
            norm_pix=config.mae.norm_pix_loss,
        ),  # fmt: skip
        encode=functools.partial(encode, model=model),
        predict=functools.partial(predict, model=model, mask_ratio=mask_ratio),
        patch_size=config.model.patch_size,
        norm_pix=config.mae.norm_pix_loss,
    )
