"""Flax linen encoders and heads; ``ENCODERS`` is the one table configs name models from."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from etils import epy

from ssl_jax.models.bert import BERTS, Bert, BertBase, BertLarge, BertTiny
from ssl_jax.models.heads import ProjectionHead
from ssl_jax.models.resnet import (
    RESNETS,
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNet10,
    ResNet18,
    ResNet34,
    ResNet50,
)
from ssl_jax.models.vit import VITS, ViT, ViTBase, ViTSmall, ViTTiny

with epy.lazy_imports():
    import ml_collections

ENCODERS = {**RESNETS, **VITS}


def build_encoder(
    model: ml_collections.ConfigDict, bn_axis_name: str | None, dtype: Any
) -> nn.Module:
    """The encoder a config's ``model`` block names (ResNets: width, stem; ViTs: patch size)."""
    if model.name in VITS:
        return VITS[model.name](
            patch_size=model.get("patch_size", 16),
            freeze_patch_embed=model.get("freeze_patch_embed", False),
            dtype=dtype,
        )
    return RESNETS[model.name](
        width_multiplier=model.get("width_multiplier", 1.0),
        stem=model.get("stem", "imagenet"),
        bn_axis_name=bn_axis_name,
        cpu_conv_rewrites=model.get("cpu_conv_rewrites", None),
        dtype=dtype,
    )


__all__ = [
    "BERTS",
    "Bert",
    "BertBase",
    "BertLarge",
    "BertTiny",
    "ENCODERS",
    "BasicBlock",
    "BottleneckBlock",
    "ProjectionHead",
    "ResNet",
    "ResNet10",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ViT",
    "ViTBase",
    "ViTSmall",
    "ViTTiny",
    "build_encoder",
]
