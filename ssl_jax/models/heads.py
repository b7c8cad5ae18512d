"""Projection heads that map encoder features into the space where the contrastive loss is taken.

SimCLR v1 uses two layers, v2 three; hidden layers carry (global) BatchNorm.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ProjectionHead(nn.Module):
    """MLP head: (num_layers - 1) x [Dense → BN → ReLU], then Dense → BN with no offset.

    Attributes:
      hidden_dim: width of the hidden layers.
      output_dim: width of the projection.
      num_layers: 2 (SimCLR v1) or 3 (SimCLR v2); 1 is a linear projection.
      use_bn: BatchNorm after every hidden layer (Dense layers then have no bias); False: a
        plain MLP with biases (MoCo v2).
      last_bn: with ``use_bn``, BatchNorm on the output layer too (MoCo v3's ResNet predictor
        has none).
      last_bn_scale: the output BatchNorm learns a scale (SimCLR's head keeps it; MoCo v3
        drops it). It never has an offset.
      bn_axis_name: mapped axis for global BatchNorm, or None.
      dtype: compute dtype; the output is float32.
    """

    hidden_dim: int = 2048
    output_dim: int = 128
    num_layers: int = 2
    use_bn: bool = True
    last_bn: bool = True
    last_bn_scale: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Projects features [B, F] to [B, output_dim]."""
        if self.num_layers < 1:
            raise ValueError(f"ProjectionHead num_layers must be >= 1; got {self.num_layers}.")

        def norm(**kwargs: Any) -> nn.Module:
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                axis_name=self.bn_axis_name if train else None,
                **kwargs,
            )

        x = jnp.asarray(x, self.dtype)
        for _ in range(self.num_layers - 1):
            x = nn.Dense(self.hidden_dim, use_bias=not self.use_bn, dtype=self.dtype)(x)
            if self.use_bn:
                x = norm()(x)
            x = nn.relu(x)
        # BN-style MLPs have no biases anywhere, the output layer included even without its BN
        # (moco-v3's _build_mlp: every Linear has bias=False).
        x = nn.Dense(self.output_dim, use_bias=not self.use_bn, dtype=self.dtype)(x)
        if self.use_bn and self.last_bn:
            x = norm(use_scale=self.last_bn_scale, use_bias=False)(x)
        return x.astype(jnp.float32)
