"""BERT masked-language modelling: on-device dynamic masking, MLM (+ optional NSP) loss.

Masks and dropout are keyed by (step rng, global example index), so results do not depend on the
device count and a resumed run draws what an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
from etils import epy
from jax import lax

from ssl_jax import losses, masking
from ssl_jax.core.method import LossAux, Method
from ssl_jax.models.bert import BERTS, Bert
from ssl_jax.text.tokenizer import Vocab

MODALITY = "text"

with epy.lazy_imports():
    import ml_collections

    from ssl_jax.text import data as text


@dataclasses.dataclass(frozen=True)
class MlmMethod(Method):
    """A Method plus what the text evaluation and report reuse of its masking and forward pass.

    Attributes:
      eval_sums: held-out sums with a fixed mask key (see ``_eval_sums``).
      mask: ``(batch, rng, example_ids) -> (input_ids, positions, labels, weights)``: the masks
        the loss draws (``masking.mask_tokens`` with the run's rate, budget and word starts).
      predict: ``(params, input_ids, segment_ids, positions) -> logits [B, P, V]``, evaluation
        mode.
    """

    eval_sums: Callable[..., dict[str, jax.Array]] | None = None
    mask: Callable[..., tuple[jax.Array, ...]] | None = None
    predict: Callable[..., jax.Array] | None = None


def build_model(config: ml_collections.ConfigDict, vocab: Vocab) -> Bert:
    model = config.model
    if model.name not in BERTS:
        raise ValueError(f"unknown model {model.name!r} for mlm: use one of {sorted(BERTS)}.")
    return BERTS[model.name](
        vocab_size=vocab.size,
        max_position=model.get("max_position", 512),
        dropout_rate=model.get("dropout_rate", 0.1),
        pad_id=vocab.pad_id,
        with_nsp=config.text.get("nsp", False),
        dtype=jnp.dtype(config.get("dtype", "float32")),
    )


def _mask_kwargs(config: ml_collections.ConfigDict, vocab: Vocab) -> dict[str, Any]:
    return dict(
        mask_id=vocab.mask_id,
        vocab_size=vocab.size,
        special_ids=vocab.special_ids,
        mask_rate=config.mlm.mask_rate,
        max_predictions=config.mlm.max_predictions,
    )


def _masked(batch, rng, example_ids, *, mask_kwargs, whole_word):
    word_starts = batch.get("word_starts") if whole_word else None
    return masking.mask_tokens(
        rng, batch["token_ids"], word_starts=word_starts, example_ids=example_ids, **mask_kwargs
    )


def _forward(params, model, input_ids, segment_ids, positions, dropout_keys):
    """Logits per example, each with its own dropout key (None: evaluation mode)."""

    def one(ids, segments, where, key):
        train = key is not None
        rngs = {"dropout": key} if train else {}
        logits, intermediates = model.apply(
            {"params": params}, ids[None], segments[None], where[None], train=train, rngs=rngs
        )
        return logits[0], jax.tree.map(lambda x: x[0], intermediates)

    if dropout_keys is None:
        return jax.vmap(lambda i, s, p: one(i, s, p, None))(input_ids, segment_ids, positions)
    return jax.vmap(one)(input_ids, segment_ids, positions, dropout_keys)


def _loss(params, state, batch, rng, axis_name: Hashable | None, *, model, mask_kwargs, config):
    token_ids = batch["token_ids"]
    n = token_ids.shape[0]
    first = 0 if axis_name is None else lax.axis_index(axis_name) * n
    example_ids = first + jnp.arange(n)
    mask_rng, dropout_rng = jax.random.split(rng)
    input_ids, positions, labels, weights = _masked(
        batch, mask_rng, example_ids, mask_kwargs=mask_kwargs,
        whole_word=config.text.get("whole_word_masking", False),
    )  # fmt: skip
    segment_ids = batch.get("segment_ids", jnp.zeros_like(token_ids))
    # Per-example dropout keys: the same global batch drops the same units on any device count.
    dropout_keys = jax.vmap(lambda i: jax.random.fold_in(dropout_rng, i))(example_ids)
    logits, intermediates = _forward(params, model, input_ids, segment_ids, positions, dropout_keys)
    mlm, accuracy = losses.mlm_loss(logits, labels, weights, axis_name=axis_name)
    metrics = {"loss": mlm, "mlm_loss": mlm, "mlm_accuracy": accuracy, "perplexity": jnp.exp(mlm)}
    loss = mlm
    if model.with_nsp:
        nsp_logits = intermediates["nsp_logits"]
        log_probs = jax.nn.log_softmax(nsp_logits)
        nsp_labels = batch["next_sentence_labels"]
        nsp = -jnp.mean(jnp.take_along_axis(log_probs, nsp_labels[:, None], axis=1))
        nsp_accuracy = jnp.mean(jnp.argmax(nsp_logits, -1) == nsp_labels)
        loss = mlm + losses.mean_over_devices(nsp, axis_name)
        metrics.update(loss=loss, nsp_accuracy=losses.mean_over_devices(nsp_accuracy, axis_name))
    return loss, LossAux({}, metrics)


def _eval_sums(params, batch, example_ids, rng, *, model, mask_kwargs, whole_word):
    """Sums over a (global) batch: ``nll``, ``correct`` and ``count`` of the masked predictions.

    Masks come from ``rng`` and each sequence's ``example_ids`` (its index in the split), so
    they are the same whatever the batch size and device count. All-padding rows count nothing.
    """
    input_ids, positions, labels, weights = _masked(
        batch, rng, example_ids, mask_kwargs=mask_kwargs, whole_word=whole_word
    )
    segment_ids = batch.get("segment_ids", jnp.zeros_like(input_ids))
    logits, _ = _forward(params, model, input_ids, segment_ids, positions, None)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "nll": jnp.sum(nll * weights),
        "correct": jnp.sum(correct * weights),
        "count": jnp.sum(weights),
    }


def _init(rng, sample_batch, *, model: Bert, max_predictions: int):
    token_ids = jnp.asarray(sample_batch["token_ids"][:1], jnp.int32)
    positions = jnp.zeros((1, max_predictions), jnp.int32)
    variables = model.init(rng, token_ids, jnp.zeros_like(token_ids), positions, train=False)
    return {"params": variables["params"], "batch_stats": {}}


def _encode(variables, token_ids, *, model: Bert):
    """Mean of the final hidden states over non-padding tokens: features [b, H], float32."""
    token_ids = jnp.asarray(token_ids, jnp.int32)
    hidden, intermediates = model.apply(
        {"params": variables["params"]}, token_ids, train=False, method=Bert.encode
    )
    valid = intermediates["valid"][..., None].astype(jnp.float32)
    return jnp.sum(hidden.astype(jnp.float32) * valid, 1) / jnp.maximum(valid.sum(1), 1.0)


def validate(
    config: ml_collections.ConfigDict, global_batch_size: int, device_count: int = 1
) -> None:
    """Raises ValueError, naming the field to change, for settings MLM cannot train with."""
    del global_batch_size, device_count
    if config.model.name not in BERTS:
        raise ValueError(f"model.name={config.model.name!r}: use one of {sorted(BERTS)}.")
    if not 0 < config.mlm.mask_rate < 1:
        raise ValueError(f"mlm.mask_rate={config.mlm.mask_rate} must be in (0, 1).")
    max_seq_len = config.text.max_seq_len
    if not 1 <= config.mlm.max_predictions <= max_seq_len:
        raise ValueError(
            f"mlm.max_predictions={config.mlm.max_predictions} must be in [1, text.max_seq_len="
            f"{max_seq_len}]; BERT uses about max_seq_len * mask_rate (+ a margin)."
        )
    if max_seq_len > config.model.get("max_position", 512):
        raise ValueError(
            f"text.max_seq_len={max_seq_len} exceeds model.max_position="
            f"{config.model.get('max_position', 512)}."
        )


def make(
    config: ml_collections.ConfigDict,
    image_size: int | None = None,
    bn_axis_name: str | None = None,
    *,
    total_steps: int | None = None,
    vocab: Vocab | None = None,
) -> MlmMethod:
    """MLM's functions for ``config`` (model, text, mlm fields).

    ``image_size`` and ``bn_axis_name`` are accepted for the trainer's common call and unused
    (BERT has no BatchNorm). ``vocab`` defaults to the config's (``data.text.describe_config``).
    """
    del image_size, bn_axis_name, total_steps
    if vocab is None:
        vocab = text.describe_config(config).vocab()
    model = build_model(config, vocab)
    mask_kwargs = _mask_kwargs(config, vocab)
    whole_word = config.text.get("whole_word_masking", False)
    return MlmMethod(
        name="mlm",
        init=functools.partial(_init, model=model, max_predictions=config.mlm.max_predictions),
        loss=functools.partial(_loss, model=model, mask_kwargs=mask_kwargs, config=config),
        encode=functools.partial(_encode, model=model),
        input_key="token_ids",
        eval_sums=functools.partial(
            _eval_sums, model=model, mask_kwargs=mask_kwargs, whole_word=whole_word
        ),
        mask=functools.partial(_masked, mask_kwargs=mask_kwargs, whole_word=whole_word),
        predict=functools.partial(_predict, model=model),
    )


def _predict(params, input_ids, segment_ids, positions, *, model: Bert) -> jax.Array:
    logits, _ = model.apply({"params": params}, input_ids, segment_ids, positions, train=False)
    return logits
