"""BERT encoder (post-LN transformer over word + position + segment embeddings) with its heads.

The MLM head runs only at the gathered masked positions and decodes with the word embeddings
themselves (tied weights); an optional pooler + next-sentence head sits on [CLS].
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import masking

_init = nn.initializers.truncated_normal(0.02)  # BERT's initializer range
_LAYER_NORM_EPSILON = 1e-12


class TransformerLayer(nn.Module):
    """Post-LN layer: x = LN(x + Attention(x)); x = LN(x + FFN(x)), GELU in the FFN."""

    num_heads: int
    intermediate_size: int
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, train: bool) -> jax.Array:
        hidden = x.shape[-1]
        attention = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, kernel_init=_init,
            dropout_rate=self.dropout_rate, deterministic=not train, name="attention",
        )(x, x, mask=attention_mask)  # fmt: skip
        attention = nn.Dropout(self.dropout_rate, deterministic=not train)(attention)
        x = nn.LayerNorm(_LAYER_NORM_EPSILON, dtype=self.dtype, name="attention_norm")(
            x + attention
        )
        y = nn.Dense(self.intermediate_size, dtype=self.dtype, kernel_init=_init, name="ffn_in")(x)
        # Exact erf GELU, as Hugging Face's BERT ("gelu", the benchmarks' anchor);
        # google-research/bert's modeling.gelu is the tanh approximation, at most 4.7e-4 away.
        y = nn.gelu(y, approximate=False)
        y = nn.Dense(hidden, dtype=self.dtype, kernel_init=_init, name="ffn_out")(y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return nn.LayerNorm(_LAYER_NORM_EPSILON, dtype=self.dtype, name="ffn_norm")(x + y)


class Bert(nn.Module):
    """BERT with an MLM head tied to the word embeddings and an optional NSP head.

    Attributes:
      vocab_size: rows of the word-embedding table (and MLM output classes).
      hidden_size, num_layers, num_heads, intermediate_size: transformer sizes.
      max_position: longest sequence the learned position embeddings cover.
      type_vocab_size: number of segment ids (2: sentence A / B).
      dropout_rate: dropout on embeddings, attention probabilities and residual branches.
      pad_id: token id excluded from attention.
      with_nsp: also build the pooler and next-sentence classifier.
      dtype: compute dtype (e.g. bfloat16); parameters and logits stay float32.
    """

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    pad_id: int = 0
    with_nsp: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        hidden = self.hidden_size
        self.word_embeddings = nn.Embed(
            self.vocab_size, hidden, embedding_init=_init, dtype=self.dtype
        )
        self.position_embeddings = nn.Embed(
            self.max_position, hidden, embedding_init=_init, dtype=self.dtype
        )
        self.segment_embeddings = nn.Embed(
            self.type_vocab_size, hidden, embedding_init=_init, dtype=self.dtype
        )
        self.embedding_norm = nn.LayerNorm(_LAYER_NORM_EPSILON, dtype=self.dtype)
        self.embedding_dropout = nn.Dropout(self.dropout_rate)
        self.layers = [
            TransformerLayer(self.num_heads, self.intermediate_size, self.dropout_rate, self.dtype)
            for _ in range(self.num_layers)
        ]
        self.mlm_dense = nn.Dense(hidden, dtype=self.dtype, kernel_init=_init)
        self.mlm_norm = nn.LayerNorm(_LAYER_NORM_EPSILON, dtype=self.dtype)
        self.mlm_bias = self.param("mlm_bias", nn.initializers.zeros, (self.vocab_size,))
        if self.with_nsp:
            self.pooler = nn.Dense(hidden, dtype=self.dtype, kernel_init=_init)
            self.nsp_classifier = nn.Dense(2, dtype=self.dtype, kernel_init=_init)

    def encode(
        self, token_ids: jax.Array, segment_ids: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Hidden states [B, L, H] of token ids [B, L]; intermediates hold ``valid`` [B, L].

        Padding (``pad_id``) is masked out of attention as a key, so real tokens' outputs do not
        depend on how much padding follows them.
        """
        length = token_ids.shape[-1]
        if length > self.max_position:
            raise ValueError(f"sequence length {length} > max_position={self.max_position}.")
        if segment_ids is None:
            segment_ids = jnp.zeros_like(token_ids)
        x = (
            self.word_embeddings(token_ids)
            + self.position_embeddings(jnp.arange(length))[None]
            + self.segment_embeddings(segment_ids)
        )
        x = self.embedding_dropout(self.embedding_norm(x), deterministic=not train)
        valid = token_ids != self.pad_id
        attention_mask = nn.make_attention_mask(valid, valid)
        for layer in self.layers:
            x = layer(x, attention_mask, train)
        return x, {"valid": valid}

    def mlm_logits(self, hidden: jax.Array, positions: jax.Array) -> jax.Array:
        """Float32 logits [B, P, V] at ``positions`` [B, P] of hidden states [B, L, H]."""
        gathered = masking.gather_positions(hidden, positions)
        x = self.mlm_norm(nn.gelu(self.mlm_dense(gathered), approximate=False))
        # The decoder is the word-embedding table itself (weight tying), plus an output bias.
        logits = self.word_embeddings.attend(x)
        return logits.astype(jnp.float32) + self.mlm_bias

    def nsp_logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 is-next / not-next logits [B, 2] from the [CLS] state of ``hidden``."""
        if not self.with_nsp:
            raise ValueError("this Bert was built with with_nsp=False.")
        pooled = jnp.tanh(self.pooler(hidden[:, 0]))
        return self.nsp_classifier(pooled).astype(jnp.float32)

    def __call__(
        self,
        token_ids: jax.Array,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """MLM logits [B, P, V] (P = 1 at position 0 if ``positions`` is None) and intermediates.

        Touches every parameter, so ``init`` through this method creates them all.
        """
        hidden, intermediates = self.encode(token_ids, segment_ids, train=train)
        if positions is None:
            positions = jnp.zeros((token_ids.shape[0], 1), jnp.int32)
        intermediates = dict(intermediates, hidden=hidden)
        if self.with_nsp:
            intermediates["nsp_logits"] = self.nsp_logits(hidden)
        return self.mlm_logits(hidden, positions), intermediates


def _sized(layers: int, hidden: int) -> Any:
    # Google's BERT miniatures: 64-wide heads, FFN 4x the hidden size.
    return functools.partial(
        Bert, num_layers=layers, hidden_size=hidden, num_heads=hidden // 64,
        intermediate_size=4 * hidden,
    )  # fmt: skip


BertTiny = _sized(2, 128)
BertMini = _sized(4, 256)
BertSmall = _sized(4, 512)
BertMedium = _sized(8, 512)
BertBase = _sized(12, 768)
BertLarge = _sized(24, 1024)

BERTS = {
    "bert_tiny": BertTiny,
    "bert_mini": BertMini,
    "bert_small": BertSmall,
    "bert_medium": BertMedium,
    "bert_base": BertBase,
    "bert_large": BertLarge,
}
