"""Masking as pure JAX on device: BERT's tokens (~15%, corrupted 80/10/10) and MAE's patches.

Keys come from the step's rng folded with each example's global index, so a resumed run and any
device count draw the same masks for the same global batch. Both return the masked positions in
ascending order, and both models run their heads only there (``gather_positions``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _word_ids(candidate: jax.Array, word_starts: jax.Array) -> jax.Array:
    """Index of the position where each token's word starts ([L] int32)."""
    length = candidate.shape[0]
    # A piece after a special token (e.g. a word cut by the [CLS] of a packed chunk) starts a word.
    previous_candidate = jnp.concatenate([jnp.zeros(1, bool), candidate[:-1]])
    starts = word_starts | ~previous_candidate | ~candidate
    return jax.lax.cummax(jnp.where(starts, jnp.arange(length), 0))


def _mask_one(
    key: jax.Array,
    token_ids: jax.Array,
    word_starts: jax.Array,
    non_special: jax.Array,
    special: jax.Array,
    *,
    mask_id: int,
    mask_rate: float,
    max_predictions: int,
):
    length = token_ids.shape[0]
    select_key, action_key, random_key = jax.random.split(key, 3)
    candidate = ~jnp.isin(token_ids, special)
    word = _word_ids(candidate, word_starts)
    budget = jnp.round(mask_rate * candidate.sum()).astype(jnp.int32)
    budget = jnp.clip(budget, jnp.minimum(candidate.sum(), 1), max_predictions)
    # Words in a random order, each taken if its pieces still fit in the budget (a word that
    # does not fit is skipped, not the end of the draw: long words must not starve the budget).
    is_word = candidate & (word == jnp.arange(length))
    word_length = jnp.zeros(length, jnp.int32).at[word].add(candidate.astype(jnp.int32))
    scores = jnp.where(is_word, jax.random.uniform(select_key, (length,)), -1.0)
    order = jnp.argsort(-scores)

    def take(total, word_len):
        fits = (word_len > 0) & (total + word_len <= budget)
        return total + jnp.where(fits, word_len, 0), fits

    # The running total is typed like the data (varying over devices inside a shard_map).
    _, fits = jax.lax.scan(take, jnp.zeros_like(word_length[0]), word_length[order])
    chosen_word = jnp.zeros(length, bool).at[order].set(fits)
    chosen = chosen_word[word] & candidate
    # Chosen positions first, in ascending order; at most max_predictions of them.
    rank = jnp.where(chosen, jnp.arange(length), length + jnp.arange(length))
    positions = jnp.argsort(rank)[:max_predictions].astype(jnp.int32)
    if positions.shape[0] < max_predictions:
        positions = jnp.pad(positions, (0, max_predictions - positions.shape[0]))
    weights = jnp.arange(max_predictions) < chosen.sum()
    positions = jnp.where(weights, positions, 0)
    labels = jnp.where(weights, token_ids[positions], 0)

    action = jax.random.uniform(action_key, (length,))
    random_tokens = non_special[jax.random.randint(random_key, (length,), 0, len(non_special))]
    replaced = jnp.where(action < 0.8, mask_id, jnp.where(action < 0.9, random_tokens, token_ids))
    input_ids = jnp.where(chosen, replaced, token_ids)
    return input_ids, positions, labels, weights.astype(jnp.float32)


def mask_tokens(
    rng: jax.Array,
    token_ids: ArrayLike,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    mask_rate: float = 0.15,
    max_predictions: int,
    word_starts: ArrayLike | None = None,
    example_ids: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Chooses tokens to predict and corrupts them as BERT does.

    Per sequence, ``round(mask_rate * n)`` tokens are chosen (at least 1, at most
    ``max_predictions``), ``n`` being its non-special tokens; special tokens (padding included)
    are never chosen. Each chosen token becomes ``mask_id`` with probability 0.8, a uniformly
    drawn non-special token with 0.1, and stays unchanged with 0.1. With ``word_starts`` whole
    words are chosen (all their pieces or none): words are drawn in random order and each is taken
    if its pieces still fit in the budget, so a few fewer tokens may be chosen.

    Args:
      rng: PRNG key (e.g. the step's key).
      token_ids: int [B, L].
      mask_id: id of [MASK].
      vocab_size: V; random replacements are drawn from ``[0, V)`` minus ``special_ids``.
      special_ids: ids never chosen nor drawn as replacements ([PAD], [CLS], [SEP], [MASK], ...).
      mask_rate: fraction of non-special tokens to predict.
      max_predictions: P, the fixed number of prediction slots per sequence.
      word_starts: optional bool [B, L], True at the first piece of each word.
      example_ids: optional int [B] global example indices keying each row's draws (default
        ``arange(B)``); give global indices so the masks do not depend on the sharding.

    Returns:
      ``input_ids`` int32 [B, L] (corrupted), ``positions`` int32 [B, P] (chosen positions in
      ascending order, then 0), ``labels`` int32 [B, P] (original ids there, 0 in unused slots)
      and ``weights`` float32 [B, P] (1 for used slots).

    Raises:
      ValueError: bad shapes, ``mask_rate`` outside (0, 1], or ``max_predictions`` < 1.

    >>> import jax, jax.numpy as jnp
    >>> ids = jnp.array([[2, 10, 11, 12, 13, 3, 0, 0]])
    >>> _, positions, labels, weights = mask_tokens(
    ...     jax.random.PRNGKey(0), ids, mask_id=4, vocab_size=20, special_ids=(0, 1, 2, 3, 4),
    ...     mask_rate=0.5, max_predictions=3)
    >>> weights.tolist(), bool(jnp.all(labels[0, :2] == ids[0, positions[0, :2]]))
    ([[1.0, 1.0, 0.0]], True)

    References:
      Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
      Understanding", NAACL 2019 (arXiv:1810.04805), section 3.1.
    """
    token_ids = jnp.asarray(token_ids, jnp.int32)
    if token_ids.ndim != 2:
        raise ValueError(f"mask_tokens expects token_ids [B, L]; got shape {token_ids.shape}.")
    if not 0 < mask_rate <= 1:
        raise ValueError(f"mask_rate must be in (0, 1]; got {mask_rate}.")
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be >= 1; got {max_predictions}.")
    if word_starts is None:
        word_starts = jnp.ones(token_ids.shape, bool)
    word_starts = jnp.asarray(word_starts, bool)
    if word_starts.shape != token_ids.shape:
        raise ValueError(
            f"word_starts {word_starts.shape} must have the shape of token_ids {token_ids.shape}."
        )
    special = tuple(sorted({int(i) for i in special_ids} | {int(mask_id)}))
    if len(set(range(vocab_size)) - set(special)) == 0:
        raise ValueError("mask_tokens: every id of the vocabulary is special.")
    if example_ids is None:
        example_ids = jnp.arange(token_ids.shape[0])
    return _mask_batch(
        rng, token_ids, word_starts, jnp.asarray(example_ids), special=special,
        vocab_size=vocab_size, mask_id=mask_id, mask_rate=mask_rate,
        max_predictions=max_predictions,
    )  # fmt: skip


@functools.partial(
    jax.jit, static_argnames=("special", "vocab_size", "mask_id", "mask_rate", "max_predictions")
)
def _mask_batch(rng, token_ids, word_starts, example_ids, *, special, vocab_size, **kwargs):
    # Jitted so that eager (notebook) calls do not dispatch the scan op by op.
    non_special = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), np.asarray(special))
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(example_ids)
    mask_one = functools.partial(
        _mask_one, non_special=jnp.asarray(non_special),
        special=jnp.asarray(special, jnp.int32), **kwargs,
    )  # fmt: skip
    return jax.vmap(mask_one)(keys, token_ids, word_starts)


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rows ``positions`` [B, P] of every sequence of ``x`` [B, L, ...]: [B, P, ...].

    >>> x = jnp.arange(12).reshape(2, 3, 2)
    >>> gather_positions(x, jnp.array([[2], [0]])).tolist()
    [[[4, 5]], [[6, 7]]]
    """
    index = positions.reshape(positions.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index.astype(jnp.int32), axis=1)


def patches_kept(num_patches: int, mask_ratio: float) -> int:
    """How many patches MAE's encoder sees: ``int(N * (1 - mask_ratio))``, as the reference.

    >>> patches_kept(196, 0.75), patches_kept(49, 0.75)
    (49, 12)
    """
    kept = int(num_patches * (1 - mask_ratio))
    if not 0 < mask_ratio < 1 or not 0 < kept < num_patches:
        raise ValueError(
            f"mask_ratio={mask_ratio} of {num_patches} patches leaves {kept} visible: MAE needs "
            "at least one visible and one masked patch; use a mask_ratio in (0, 1) that does."
        )
    return kept


def mask_patches(
    rng: jax.Array,
    batch_size: int,
    num_patches: int,
    *,
    mask_ratio: float = 0.75,
    example_ids: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """MAE's random masking: per image a uniformly random subset of patches stays visible.

    Every image keeps the same number of patches (``patches_kept``), so the encoder's input
    has a static shape. Image ``i``'s draw is keyed by ``fold_in(rng, example_ids[i])``.

    Args:
      rng: PRNG key (e.g. the step's key).
      batch_size: B; num_patches: N, patches per image in row-major grid order.
      mask_ratio: fraction of patches hidden from the encoder (MAE: 0.75).
      example_ids: optional int [B] global example indices (default ``arange(B)``).

    Returns:
      ``(visible, masked)``: int32 [B, K] and [B, N - K] patch indices, each ascending; together
      a partition of ``range(N)`` per image.

    >>> visible, masked = mask_patches(jax.random.key(0), 2, 8, mask_ratio=0.75)
    >>> visible.shape, masked.shape
    ((2, 2), (2, 6))
    >>> sorted(visible[0].tolist() + masked[0].tolist()) == list(range(8))
    True
    >>> again, _ = mask_patches(jax.random.key(0), 1, 8, mask_ratio=0.75, example_ids=[1])
    >>> bool(jnp.array_equal(again[0], visible[1]))  # image 1's draw, wherever it sits
    True

    References:
      He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
      (arXiv:2111.06377), section 3 (random sampling without replacement).
    """
    kept = patches_kept(num_patches, mask_ratio)
    if example_ids is None:
        example_ids = jnp.arange(batch_size)
    example_ids = jnp.asarray(example_ids)
    if example_ids.shape != (batch_size,):
        raise ValueError(
            f"mask_patches expects example_ids of shape ({batch_size},); got {example_ids.shape}."
        )

    def one(i):
        order = jnp.argsort(jax.random.uniform(jax.random.fold_in(rng, i), (num_patches,)))
        return jnp.sort(order[:kept]), jnp.sort(order[kept:])

    visible, masked = jax.vmap(one)(example_ids)
    return visible.astype(jnp.int32), masked.astype(jnp.int32)
