"""Masked autoencoder: a ViT encoder on the visible patches, a light decoder on all of them.

The decoder sees the encoder's tokens at their patches' places and a shared learned mask token
elsewhere, each plus a fixed 2-D sine-cosine position embedding; its prediction head runs only
at the masked patches (``masking.gather_positions``, as BERT's MLM head at masked tokens).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import masking
from ssl_jax.models.vit import EncoderBlock, ViT, sincos_position_embedding


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[B, H, W, C] -> [B, N, patch² x C]: patches in row-major grid order (the ViT's token
    order), each patch's pixels row by row, channels last.

    >>> import numpy as np
    >>> images = np.arange(16).reshape(1, 4, 4, 1)
    >>> patchify(images, 2)[0, 1].tolist()  # the top-right 2 x 2 patch
    [2, 3, 6, 7]
    """
    batch, height, width, channels = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = jnp.reshape(images, (batch, rows, patch_size, cols, patch_size, channels))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return jnp.reshape(x, (batch, rows * cols, patch_size * patch_size * channels))


def unpatchify(patches: jax.Array, patch_size: int, channels: int) -> jax.Array:
    """``patchify``'s inverse for square images: [B, N, patch² x C] -> [B, H, W, C].

    >>> import numpy as np
    >>> images = np.arange(32).reshape(2, 4, 4, 1)
    >>> bool((unpatchify(patchify(images, 2), 2, 1) == images).all())
    True
    """
    batch, count, _ = patches.shape
    grid = round(count**0.5)
    x = jnp.reshape(patches, (batch, grid, grid, patch_size, patch_size, channels))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return jnp.reshape(x, (batch, grid * patch_size, grid * patch_size, channels))


class MaskedAutoencoder(nn.Module):
    """MAE: ``(images, visible, masked) -> (predictions [B, M, patch² x C], features [B, D])``.

    Attributes:
      encoder: the ViT (its ``patch_size`` sets the patches).
      decoder_width, decoder_depth, decoder_heads, decoder_mlp_dim: the decoder's shape (MAE's
        ViT-B default: 512 wide, 8 blocks, 16 heads, MLP 2048).
      dtype: compute dtype; parameters stay float32.
    """

    encoder: ViT
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    decoder_mlp_dim: int = 2048
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, visible: jax.Array, masked: jax.Array):
        features, aux = self.encoder(images, visible=visible)
        batch, side, channels = images.shape[0], images.shape[1], images.shape[-1]
        patch = self.encoder.patch_size
        grid = side // patch
        x = nn.Dense(self.decoder_width, dtype=self.dtype, name="decoder_embed")(aux["tokens"])
        mask_token = self.param(
            "mask_token", nn.initializers.normal(0.02), (1, 1, self.decoder_width)
        )
        tokens = jnp.broadcast_to(
            mask_token.astype(x.dtype), (batch, grid * grid, self.decoder_width)
        )
        tokens = tokens.at[jnp.arange(batch)[:, None], visible].set(x[:, 1:])
        tokens = tokens + sincos_position_embedding(grid, self.decoder_width).astype(x.dtype)
        x = jnp.concatenate([x[:, :1], tokens], axis=1)
        for index in range(self.decoder_depth):
            x = EncoderBlock(
                self.decoder_heads, self.decoder_mlp_dim, self.dtype, name=f"decoder_{index}"
            )(x)
        x = nn.LayerNorm(dtype=self.dtype, name="decoder_norm")(x)
        x = masking.gather_positions(x[:, 1:], masked)
        predictions = nn.Dense(patch * patch * channels, dtype=self.dtype, name="decoder_pred")(x)
        return predictions.astype(jnp.float32), features
