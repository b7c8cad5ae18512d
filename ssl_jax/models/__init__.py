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
    """The encoder a config's ``model`` block names (ResNets: width, stem; ViTs: patch size and
    any of width, depth, num_heads, mlp_dim that are not None)."""
    if model.name in VITS:
        shape = {
            field: model.get(field)
            for field in ("width", "depth", "num_heads", "mlp_dim")
            if model.get(field) is not None
        }
        return VITS[model.name](
            **shape,
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


def load_encoder(directory: str, *, dtype: Any = None) -> Any:
    """The encoder ``python -m ssl_jax.export`` wrote to ``directory``, with no workdir or data.

    Returns an ``interop.exported.Encoder``: ``module``, ``variables`` (params and BN
    statistics), ``metadata`` (the folder's encoder.json); calling it gives evaluation-mode
    features of uint8 images (or token ids). ``dtype`` overrides the compute dtype.

    >>> import tempfile, jax, numpy as np
    >>> from ssl_jax.models.interop import exported
    >>> module = ResNet10(width_multiplier=0.25, stem="small")
    >>> images = np.zeros((2, 8, 8, 1), np.uint8)
    >>> init = lambda x: module.init(jax.random.PRNGKey(0), x, train=False)
    >>> shapes = jax.eval_shape(init, images / 255.0)  # traced, not compiled: cheap
    >>> variables = jax.tree.map(lambda s: np.full(s.shape, 0.1, s.dtype), shapes)
    >>> folder = tempfile.mkdtemp() + "/encoder"
    >>> info = {"kind": "image", "model": {"name": "resnet10", "width_multiplier": 0.25,
    ...         "stem": "small"}, "input": {"image_size": 8, "channels": 1}}
    >>> _ = exported.write(folder, variables, info)
    >>> encoder = load_encoder(folder)
    >>> encoder(images).shape
    (2, 128)

    Raises:
      FileNotFoundError: ``directory`` is not an export folder.
      interop.exported.ShapeMismatchError: its weights do not fit the model it describes.
    """
    from ssl_jax.models.interop import exported

    return exported.load_encoder(directory, dtype=dtype)


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
    "load_encoder",
]
