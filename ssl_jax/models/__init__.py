"""Flax linen encoders and heads; ``ENCODERS`` is the one table configs name models from."""

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

ENCODERS = dict(RESNETS)

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "BottleneckBlock",
    "ProjectionHead",
    "ResNet",
    "ResNet10",
    "ResNet18",
    "ResNet34",
    "ResNet50",
]
