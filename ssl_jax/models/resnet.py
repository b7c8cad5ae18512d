"""ResNet encoders (v1.5) with CIFAR and ImageNet stems, a width multiplier and global BatchNorm.

``__call__`` returns ``(features, intermediates)``: pooled [B, C] features and each stage's map.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.conv import conv_module

ModuleDef = Any
STEMS = ("imagenet", "cifar", "small")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3))(y)
        # Zero-initialised last scale: each block starts as the identity, which trains stably.
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), (self.strides, self.strides))(residual)
            residual = self.norm()(residual)
        return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
    """1x1 → 3x3 (strided, as in v1.5) → 1x1 with 4x expansion (ResNet-50)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides))(residual)
            residual = self.norm()(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet encoder.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block_cls: ``BasicBlock`` or ``BottleneckBlock``.
      width_multiplier: scales every stage's width (base 64).
      stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool); "cifar" (3x3/1 conv, no pool), for 32x32
        inputs where early down-sampling throws away most of the image; or "small" (3x3/2 conv,
        no pool), a quarter of the cifar stem's compute for 28-64 px images on small budgets.
      bn_axis_name: mapped axis over which BatchNorm statistics are averaged (global BN), or None.
      bn_momentum: decay of the running statistics used at evaluation.
      dtype: compute dtype; parameters stay float32.
      cpu_conv_rewrites: in training, rewrite convolutions as ``models.conv`` describes (stored
        inputs, stride-2 gradients without dilation), a speed-up only for XLA:CPU; None turns
        them on when JAX's default backend is the CPU. GPU and TPU convolutions need no
        transposed copy, and XLA:GPU copies a conditional's predicate to the host.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef = BasicBlock
    width_multiplier: float = 1.0
    stem: str = "imagenet"
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32
    cpu_conv_rewrites: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes images [B, H, W, C] into features [B, 8 * width * expansion]."""
        if self.stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {STEMS}; got {self.stem!r}.")
        rewrites = self.cpu_conv_rewrites
        if rewrites is None:
            rewrites = jax.default_backend() == "cpu"
        conv = conv_module(rewrites and train, use_bias=False, dtype=self.dtype, padding="SAME")
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1e-5,
            dtype=self.dtype,
            axis_name=self.bn_axis_name if train else None,
        )
        width = max(1, int(round(64 * self.width_multiplier)))
        x = jnp.asarray(x, self.dtype)
        if self.stem == "imagenet":
            x = conv(width, (7, 7), (2, 2), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        else:
            strides = (2, 2) if self.stem == "small" else (1, 1)
            x = conv(width, (3, 3), strides, name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))
        intermediates = {"stem": x}
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = self.block_cls(width * 2**stage, conv=conv, norm=norm, strides=strides)(x)
            intermediates[f"stage{stage + 1}"] = x
        features = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        return features, intermediates


ResNet10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock)
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock)

RESNETS: dict[str, Callable[..., ResNet]] = {
    "resnet10": ResNet10,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
}
