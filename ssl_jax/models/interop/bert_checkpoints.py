"""BERT weights in and out: Hugging Face ``BertForMaskedLM`` folders and Google's TF checkpoints.

Both name the same tensors (HF's names are Google's with ``.`` for ``/`` and torch ``Linear``
weights stored [out, in]); ``ENTRIES`` pairs each with ``ssl_jax.models.Bert``'s parameters.

What ours cannot express is refused with a one-line error rather than loaded approximately:
a ``hidden_act`` other than erf GELU, ``layer_norm_eps`` other than 1e-12, relative position
embeddings, and an MLM decoder not tied to the word embeddings. Ours masks padding by token id
(``pad_id``), HF by ``attention_mask``: real tokens' outputs agree when the mask is
``input_ids != pad_token_id``; padded positions' own outputs differ (ours lets a padded query
attend to every key, HF to the real ones) and are meaningless in both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from ssl_jax.models.bert import _LAYER_NORM_EPSILON, Bert
from ssl_jax.models.interop.exported import ShapeMismatchError

HF_WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"
# Buffers and tied copies HF files may hold beside the weights.
_HF_IGNORED = ("bert.embeddings.position_ids",)
_HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

# How a tensor of ours ([in, out] kernels, per-head attention kernels) sits in the other layout.
COPY, DENSE, HEADS_IN, HEADS_BIAS, HEADS_OUT, NSP = (
    "copy", "dense", "heads_in", "heads_bias", "heads_out", "nsp",
)  # fmt: skip


def _entries(num_layers: int, with_nsp: bool) -> Iterator[tuple[str, str, str, str]]:
    """(our flat key, HF name, TF name, kind) for every parameter of a ``Bert``."""

    def dense(ours: str, stem: str, kernel_kind: str = DENSE, bias_kind: str = COPY):
        tf_stem = stem.replace(".", "/").replace("encoder/layer/", "encoder/layer_")
        yield f"{ours}/kernel", f"{stem}.weight", f"{tf_stem}/kernel", kernel_kind
        yield f"{ours}/bias", f"{stem}.bias", f"{tf_stem}/bias", bias_kind

    def norm(ours: str, stem: str):
        tf_stem = stem.replace(".", "/").replace("encoder/layer/", "encoder/layer_")
        yield f"{ours}/scale", f"{stem}.weight", f"{tf_stem}/gamma", COPY
        yield f"{ours}/bias", f"{stem}.bias", f"{tf_stem}/beta", COPY

    for ours, theirs in (
        ("word_embeddings", "word_embeddings"),
        ("position_embeddings", "position_embeddings"),
        ("segment_embeddings", "token_type_embeddings"),
    ):
        yield (
            f"{ours}/embedding",
            f"bert.embeddings.{theirs}.weight",
            (f"bert/embeddings/{theirs}"),
            COPY,
        )
    yield from norm("embedding_norm", "bert.embeddings.LayerNorm")
    for i in range(num_layers):
        ours, stem = f"layers_{i}", f"bert.encoder.layer.{i}"
        for projection in ("query", "key", "value"):
            yield from dense(
                f"{ours}/attention/{projection}", f"{stem}.attention.self.{projection}",
                HEADS_IN, HEADS_BIAS,
            )  # fmt: skip
        yield from dense(f"{ours}/attention/out", f"{stem}.attention.output.dense", HEADS_OUT)
        yield from norm(f"{ours}/attention_norm", f"{stem}.attention.output.LayerNorm")
        yield from dense(f"{ours}/ffn_in", f"{stem}.intermediate.dense")
        yield from dense(f"{ours}/ffn_out", f"{stem}.output.dense")
        yield from norm(f"{ours}/ffn_norm", f"{stem}.output.LayerNorm")
    yield from dense("mlm_dense", "cls.predictions.transform.dense")
    yield from norm("mlm_norm", "cls.predictions.transform.LayerNorm")
    yield "mlm_bias", "cls.predictions.bias", "cls/predictions/output_bias", COPY
    if with_nsp:
        yield from dense("pooler", "bert.pooler.dense")
        yield (
            "nsp_classifier/kernel",
            "cls.seq_relationship.weight",
            ("cls/seq_relationship/output_weights"),
            NSP,
        )
        yield (
            "nsp_classifier/bias",
            "cls.seq_relationship.bias",
            ("cls/seq_relationship/output_bias"),
            COPY,
        )


def _to_layout(kind: str, layout: str, x: np.ndarray) -> np.ndarray:
    """Our tensor ``x`` as ``layout`` ("hf" or "tf") stores it."""
    if kind == HEADS_BIAS:
        return x.reshape(-1)
    if kind == HEADS_IN:  # [H, heads, head_dim] -> [H, heads*head_dim]
        x = x.reshape(x.shape[0], -1)
    elif kind == HEADS_OUT:  # [heads, head_dim, H] -> [heads*head_dim, H]
        x = x.reshape(-1, x.shape[-1])
    if kind == NSP or (layout == "hf" and kind in (DENSE, HEADS_IN, HEADS_OUT)):
        x = x.T  # torch Linear weights (and TF's output_weights) are [out, in]
    return np.ascontiguousarray(x)


def _from_layout(kind: str, layout: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind == NSP or (layout == "hf" and kind in (DENSE, HEADS_IN, HEADS_OUT)):
        x = x.T
    return np.ascontiguousarray(x.reshape(shape))


def _layout_shape(kind: str, layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return _to_layout(kind, layout, np.broadcast_to(np.float32(0), shape)).shape


def param_shapes(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Flat key -> ShapeDtypeStruct of ``Bert(**fields)``'s parameters (traced, not compiled)."""
    model = Bert(**fields)
    sample = jax.ShapeDtypeStruct((1, 1), jnp.int32)  # shapes only: nothing compiles
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, x, x), sample)
    return traverse_util.flatten_dict(shapes["params"], sep="/")


def to_tensors(params: Mapping[str, Any], fields: Mapping[str, Any], layout: str = "hf"):
    """Our ``params`` as ``{name: array}`` of ``layout`` ("hf" or "tf"), float32."""
    flat = traverse_util.flatten_dict(jax.device_get(dict(params)), sep="/")
    column = 1 if layout == "hf" else 2
    return {
        entry[column]: _to_layout(entry[3], layout, np.asarray(flat[entry[0]], np.float32))
        for entry in _entries(fields["num_layers"], fields.get("with_nsp", False))
    }


def from_tensors(
    tensors: Mapping[str, Any], fields: Mapping[str, Any], layout: str, source: str
) -> dict[str, Any]:
    """``Bert(**fields)`` params from ``{name: array}`` of ``layout``, every shape checked first.

    Raises:
      ShapeMismatchError: a tensor is missing or shaped otherwise (its name and both shapes).
    """
    expected = param_shapes(fields)
    column = 1 if layout == "hf" else 2
    params = {}
    for entry in _entries(fields["num_layers"], fields.get("with_nsp", False)):
        name, kind, shape = entry[column], entry[3], tuple(expected[entry[0]].shape)
        want = _layout_shape(kind, layout, shape)
        if name not in tensors:
            raise ShapeMismatchError(
                f"{source}: tensor {name} (shape {want}) is missing: not a BERT checkpoint of this "
                "layout, or one without its MLM head."
            )
        found = tuple(tensors[name].shape)
        if found != want:
            raise ShapeMismatchError(
                f"{source}: tensor {name} has shape {found} but {entry[0]} of the model its "
                f"config describes needs {want}: the config and the weights disagree."
            )
        params[entry[0]] = _from_layout(kind, layout, np.asarray(tensors[name], np.float32), shape)
    return traverse_util.unflatten_dict(params, sep="/")


def fields_from_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``Bert`` constructor arguments of an HF ``config.json`` or Google ``bert_config.json``."""

    def refuse(field: str, value: Any, supported: Any) -> None:
        raise ValueError(
            f"{source}: {field}={value!r}, but ssl_jax's Bert implements {supported} only."
        )

    if config.get("hidden_act", "gelu") != "gelu":
        refuse("hidden_act", config["hidden_act"], "'gelu' (exact erf)")
    if not np.isclose(config.get("layer_norm_eps", _LAYER_NORM_EPSILON), _LAYER_NORM_EPSILON):
        refuse("layer_norm_eps", config["layer_norm_eps"], _LAYER_NORM_EPSILON)
    if config.get("position_embedding_type", "absolute") != "absolute":
        refuse("position_embedding_type", config["position_embedding_type"], "'absolute'")
    if not config.get("tie_word_embeddings", True):
        refuse("tie_word_embeddings", False, "an MLM decoder tied to the word embeddings")
    hidden_dropout = config.get("hidden_dropout_prob", 0.1)
    if config.get("attention_probs_dropout_prob", hidden_dropout) != hidden_dropout:
        logging.warning(
            "%s: one dropout rate in ssl_jax's Bert; using hidden_dropout_prob=%s for attention "
            "too (attention_probs_dropout_prob=%s).",
            source, hidden_dropout, config["attention_probs_dropout_prob"],
        )  # fmt: skip
    return dict(
        vocab_size=int(config["vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        intermediate_size=int(config["intermediate_size"]),
        max_position=int(config["max_position_embeddings"]),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        dropout_rate=float(hidden_dropout),
        pad_id=int(config.get("pad_token_id") or 0),
    )


def hf_config(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The HF ``config.json`` of ``Bert(**fields)``."""
    defaults = {
        field.name: field.default
        for field in dataclasses.fields(Bert)
        if field.default is not dataclasses.MISSING
    }
    fields = {**defaults, **fields}
    return {
        "architectures": ["BertForPreTraining" if fields.get("with_nsp") else "BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": fields["vocab_size"],
        "hidden_size": fields["hidden_size"],
        "num_hidden_layers": fields["num_layers"],
        "num_attention_heads": fields["num_heads"],
        "intermediate_size": fields["intermediate_size"],
        "max_position_embeddings": fields["max_position"],
        "type_vocab_size": fields["type_vocab_size"],
        "hidden_act": "gelu",
        "layer_norm_eps": _LAYER_NORM_EPSILON,
        "hidden_dropout_prob": fields["dropout_rate"],
        "attention_probs_dropout_prob": fields["dropout_rate"],
        "pad_token_id": fields["pad_id"],
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
    }


def load_hf(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``Bert`` fields, params) of an HF ``BertForMaskedLM`` folder (config.json +
    model.safetensors, as ``save_pretrained`` writes)."""
    weights = os.path.join(directory, HF_WEIGHTS_FILE)
    for path in (os.path.join(directory, HF_CONFIG_FILE), weights):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist: pass a folder saved by BertForMaskedLM.save_pretrained."
            )
    with open(os.path.join(directory, HF_CONFIG_FILE)) as f:
        config = json.load(f)
    fields = fields_from_config(config, os.path.join(directory, HF_CONFIG_FILE))
    tensors = safetensors_numpy.load_file(weights)
    if "bert.pooler.dense.weight" in tensors and "cls.seq_relationship.weight" in tensors:
        fields["with_nsp"] = True
    # Old checkpoints name LayerNorm parameters gamma / beta, as TF did.
    tensors = {
        name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        ): value
        for name, value in tensors.items()
        if name not in _HF_IGNORED
    }
    for copy, original in _HF_TIED.items():
        if copy in tensors:
            if original not in tensors:
                tensors[original] = tensors[copy]
            elif not np.array_equal(tensors[copy], tensors[original]):
                raise ValueError(
                    f"{weights}: {copy} differs from {original}; ssl_jax's Bert ties them."
                )
    return fields, from_tensors(tensors, fields, "hf", weights)


def save_hf(directory: str, fields: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Writes ``config.json`` and ``model.safetensors`` that ``BertForMaskedLM.from_pretrained``
    loads (tied decoder left out, as ``save_pretrained`` does)."""
    os.makedirs(directory, exist_ok=True)
    safetensors_numpy.save_file(
        to_tensors(params, fields, "hf"),
        os.path.join(directory, HF_WEIGHTS_FILE),
        metadata={"format": "pt"},  # what transformers' loader expects to find
    )
    os.chmod(os.path.join(directory, HF_WEIGHTS_FILE), 0o644)  # safetensors writes 0o600
    with open(os.path.join(directory, HF_CONFIG_FILE), "w") as f:
        json.dump(hf_config(fields), f, indent=2, sort_keys=True)


def load_tf(checkpoint: str, config_file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``Bert`` fields, params) of Google's TF BERT checkpoint (``bert_model.ckpt`` prefix and
    its ``bert_config.json``).

    Google's own code computes ``hidden_act="gelu"`` with the tanh approximation; ours (and HF's
    port) uses erf, at most 4.7e-4 away per activation.
    """
    import tensorflow as tf  # only this reader needs TF's checkpoint format

    with open(config_file) as f:
        fields = fields_from_config(json.load(f), config_file)
    reader = tf.train.load_checkpoint(checkpoint)
    names = reader.get_variable_to_shape_map()
    fields["with_nsp"] = "cls/seq_relationship/output_weights" in names
    tensors = {
        name: reader.get_tensor(name) for name in names if name.startswith(("bert/", "cls/"))
    }
    return fields, from_tensors(tensors, fields, "tf", checkpoint)
