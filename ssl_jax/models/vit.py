"""Vision Transformer encoders (ViT-Tiny/Small/Base) for MoCo v3 and MAE.

Fixed 2-D sine-cosine position embeddings and, optionally, a frozen random patch projection, the
MoCo v3 remedy for training instability. Given the indices of visible patches, the encoder runs on
those alone (MAE): position embeddings are added before the others are dropped.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import masking


def sincos_position_embedding(grid_size: int, dim: int) -> np.ndarray:
    """[grid_size**2, dim] fixed embeddings: half the channels encode rows, half columns."""
    if dim % 4:
        raise ValueError(f"ViT width must be divisible by 4 for 2-D sin-cos embeddings; got {dim}.")
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    out = [f(axis.reshape(-1, 1) * omega) for axis in (rows, cols) for f in (np.sin, np.cos)]
    return np.concatenate(out, axis=1).astype(np.float32)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: attention and MLP, each with a residual."""

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype)(y)
        y = nn.Dense(x.shape[-1], dtype=self.dtype)(nn.gelu(y))
        return x + y


class ViT(nn.Module):
    """ViT encoder returning the final [CLS] token as features.

    Attributes:
      width: token width; depth: blocks; num_heads: attention heads; mlp_dim: MLP hidden width.
      patch_size: side of the square patches (the image side must divide by it).
      freeze_patch_embed: keep the random patch projection fixed. Its parameter is named
        ``frozen_patch_embed`` so that ``optim.decay_mask`` leaves it out of weight decay too.
      dtype: compute dtype; parameters stay float32.
    """

    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    patch_size: int = 16
    freeze_patch_embed: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = True, visible: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes images [B, H, W, C] into features [B, width].

        ``visible``: optional int [B, K] patch indices (row-major grid order) the encoder sees;
        the returned ``tokens`` are then [B, 1 + K, width], the [CLS] token first.
        """
        del train  # no dropout or BatchNorm in the encoder
        side = x.shape[1]
        if side % self.patch_size or x.shape[2] != side:
            raise ValueError(
                f"ViT needs square images whose side divides by patch_size={self.patch_size}; "
                f"got {x.shape[1:3]}."
            )
        name = "frozen_patch_embed" if self.freeze_patch_embed else "patch_embed"
        patch = nn.Conv(
            self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
            padding="VALID", dtype=self.dtype, name=name,
        )(jnp.asarray(x, self.dtype))  # fmt: skip
        if self.freeze_patch_embed:
            patch = jax.lax.stop_gradient(patch)
        batch, grid = patch.shape[0], patch.shape[1]
        tokens = patch.reshape(batch, grid * grid, self.width)
        tokens = tokens + sincos_position_embedding(grid, self.width).astype(self.dtype)
        if visible is not None:
            tokens = masking.gather_positions(tokens, visible)
        cls = self.param("cls", nn.initializers.normal(1e-6), (1, 1, self.width))
        tokens = jnp.concatenate([jnp.tile(cls.astype(self.dtype), (batch, 1, 1)), tokens], axis=1)
        for _ in range(self.depth):
            tokens = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype)(tokens)
        tokens = nn.LayerNorm(dtype=self.dtype, name="final_norm")(tokens)
        return tokens[:, 0].astype(jnp.float32), {"tokens": tokens}


ViTTiny = functools.partial(ViT, width=192, depth=12, num_heads=3, mlp_dim=768)
ViTSmall = functools.partial(ViT, width=384, depth=12, num_heads=6, mlp_dim=1536)
ViTBase = functools.partial(ViT, width=768, depth=12, num_heads=12, mlp_dim=3072)

VITS = {"vit_tiny": ViTTiny, "vit_small": ViTSmall, "vit_base": ViTBase}
