"""The fields every image run reads (data, encoder, head, views, kNN, probe), with their rules."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import ml_collections

from ssl_jax.core.fields import (
    BOOL,
    OPTIONAL_BOOL,
    PROBABILITY,
    Rule,
    _is_number,
    integer,
    number,
    one_of,
)
from ssl_jax.models import ENCODERS
from ssl_jax.models.resnet import STEMS
from ssl_jax.vision.augment import simclr_augment


def _crop_scale(value: Any) -> bool:
    try:
        low, high = value
    except (TypeError, ValueError):
        return False
    return _is_number(low) and _is_number(high) and 0 < low <= high <= 1


CROP_SCALE = Rule("a pair (low, high) with 0 < low <= high <= 1", _crop_scale)

# The fields of one SimCLR view (augment.simclr_augment's keywords), also the ones the second view
# may change (augment.second_view).
VIEW = {
    "augment.crop_scale": CROP_SCALE,
    "augment.jitter_strength": number(0),
    "augment.jitter_prob": PROBABILITY,
    "augment.grayscale_prob": PROBABILITY,
    "augment.blur_prob": PROBABILITY,
    "augment.solarize_prob": PROBABILITY,
    "augment.flip": BOOL,
}


def _second_view(value: Any) -> bool:
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        return False
    known = set(inspect.signature(simclr_augment).parameters) - {"rng", "image", "out_size"}
    return all(
        key in known and VIEW[f"augment.{key}"].accepts(field) for key, field in value.items()
    )


SECOND_VIEW = Rule(
    "a dict of view fields that differ for view 2 ("
    + ", ".join(name.split(".")[1] for name in VIEW)
    + "), each in its field's range",
    _second_view,
)

# Read by the image methods: image data, encoder, projection head, augmentations, kNN monitor and
# the online probe.
IMAGE: dict[str, Rule] = {
    "image_size": integer(1, none="the dataset's own"),
    "cache_dataset": BOOL,
    "model.name": one_of(ENCODERS),
    "model.width_multiplier": number(0, low_open=True),
    "model.stem": one_of(STEMS),
    "model.patch_size": integer(1),
    "model.freeze_patch_embed": BOOL,
    "model.width": integer(4, none="the named ViT's"),
    "model.depth": integer(1, none="the named ViT's"),
    "model.num_heads": integer(1, none="the named ViT's"),
    "model.mlp_dim": integer(1, none="the named ViT's"),
    "model.cpu_conv_rewrites": OPTIONAL_BOOL,
    "head.hidden_dim": integer(1),
    "head.output_dim": integer(1),
    "head.num_layers": integer(1),
    "head.use_bn": BOOL,
    "head.last_bn_scale": BOOL,
    **VIEW,
    "augment.second_view": SECOND_VIEW,
    "knn.k": integer(1),
    "knn.temperature": number(0, low_open=True),
    "knn.batch_size": integer(1),
    "knn.max_memory_examples": integer(1, none="the whole split"),
    "knn.max_test_examples": integer(1, none="the whole split"),
    "probe.enabled": BOOL,
    "probe.learning_rate": number(0, low_open=True),
}
