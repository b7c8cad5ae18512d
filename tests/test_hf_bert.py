"""BERT checkpoints in Hugging Face and Google TF layouts: exact round trips, a NumPy forward pass.

Files are written here in each layout by hand; parity against transformers itself is
benchmarks/bert_hf_parity.py (torch lives in its own venv).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from ssl_jax.models.bert import Bert
from ssl_jax.models.interop import bert_checkpoints
from ssl_jax.models.interop.exported import ShapeMismatchError

HF_CONFIG = {
    "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 37,
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 24, "max_position_embeddings": 12, "type_vocab_size": 2,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
}  # fmt: skip


def hf_tensors(config, seed=0, with_nsp=False):
    """HF BertForMaskedLM tensors by their HF names and torch shapes ([out, in] weights)."""
    rng = np.random.default_rng(seed)
    hidden, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {
        "bert.embeddings.word_embeddings.weight": (vocab, hidden),
        "bert.embeddings.position_embeddings.weight": (config["max_position_embeddings"], hidden),
        "bert.embeddings.token_type_embeddings.weight": (config["type_vocab_size"], hidden),
        "cls.predictions.transform.dense.weight": (hidden, hidden),
        "cls.predictions.transform.dense.bias": (hidden,),
        "cls.predictions.bias": (vocab,),
    }
    norms = ["bert.embeddings.LayerNorm", "cls.predictions.transform.LayerNorm"]
    for i in range(config["num_hidden_layers"]):
        layer = f"bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            shapes[f"{layer}.attention.self.{name}.weight"] = (hidden, hidden)
            shapes[f"{layer}.attention.self.{name}.bias"] = (hidden,)
        shapes[f"{layer}.attention.output.dense.weight"] = (hidden, hidden)
        shapes[f"{layer}.attention.output.dense.bias"] = (hidden,)
        shapes[f"{layer}.intermediate.dense.weight"] = (inner, hidden)
        shapes[f"{layer}.intermediate.dense.bias"] = (inner,)
        shapes[f"{layer}.output.dense.weight"] = (hidden, inner)
        shapes[f"{layer}.output.dense.bias"] = (hidden,)
        norms += [f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm"]
    for norm in norms:
        shapes[f"{norm}.weight"] = shapes[f"{norm}.bias"] = (hidden,)
    if with_nsp:
        shapes.update({
            "bert.pooler.dense.weight": (hidden, hidden), "bert.pooler.dense.bias": (hidden,),
            "cls.seq_relationship.weight": (2, hidden), "cls.seq_relationship.bias": (2,),
        })  # fmt: skip
    return {
        name: (rng.normal(size=shape) * 0.3 + (name.endswith("LayerNorm.weight"))).astype(
            np.float32
        )
        for name, shape in shapes.items()
    }


def write_hf(folder, tensors, config=HF_CONFIG):
    folder.mkdir(exist_ok=True)
    safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def numpy_bert_logits(t, config, token_ids, segment_ids):
    """HF BertForMaskedLM's forward pass in NumPy from HF-named tensors (evaluation mode)."""
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))

    def linear(x, stem):
        return x @ t[f"{stem}.weight"].T + t[f"{stem}.bias"]

    def norm(x, stem):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t[f"{stem}.weight"] + t[f"{stem}.bias"]

    batch, length = token_ids.shape
    x = (
        t["bert.embeddings.word_embeddings.weight"][token_ids]
        + t["bert.embeddings.position_embeddings.weight"][np.arange(length)]
        + t["bert.embeddings.token_type_embeddings.weight"][segment_ids]
    )
    x = norm(x, "bert.embeddings.LayerNorm")
    key_bias = np.where(token_ids != 0, 0.0, -1e30)[:, None, None, :]
    for i in range(config["num_hidden_layers"]):
        layer = f"bert.encoder.layer.{i}"

        def split(y):
            return y.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (
            split(linear(x, f"{layer}.attention.self.{n}")) for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + key_bias
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = norm(x + linear(context, f"{layer}.attention.output.dense"),
                 f"{layer}.attention.output.LayerNorm")  # fmt: skip
        inner = gelu(linear(x, f"{layer}.intermediate.dense"))
        x = norm(x + linear(inner, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
    x = norm(gelu(linear(x, "cls.predictions.transform.dense")),
             "cls.predictions.transform.LayerNorm")  # fmt: skip
    return x @ t["bert.embeddings.word_embeddings.weight"].T + t["cls.predictions.bias"]


def test_hf_file_gives_numpy_berts_logits_at_real_tokens(tmp_path):
    tensors = hf_tensors(HF_CONFIG)
    fields, params = bert_checkpoints.load_hf(write_hf(tmp_path / "hf", tensors))
    token_ids = np.array([[5, 9, 3, 7, 2, 8], [4, 6, 11, 0, 0, 0]])
    segment_ids = np.array([[0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0]])
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    apply = jax.jit(Bert(**fields).apply)
    logits, _ = apply({"params": params}, token_ids, segment_ids, positions)
    expected = numpy_bert_logits(tensors, HF_CONFIG, token_ids, segment_ids)
    real = token_ids != 0
    np.testing.assert_allclose(np.asarray(logits)[real], expected[real], atol=2e-5, rtol=0)


def test_ours_to_hf_to_ours_and_hf_to_ours_to_hf_are_exact(tmp_path):
    tensors = hf_tensors(HF_CONFIG, seed=1)
    # As older HF files: LayerNorm gamma/beta, the position_ids buffer, the tied decoder copied.
    renamed = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    legacy = {}
    for name, value in tensors.items():
        for new, old in renamed.items():
            name = name.replace(new, old)
        legacy[name] = value
    legacy["bert.embeddings.position_ids"] = np.arange(12)[None]
    legacy["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    fields, params = bert_checkpoints.load_hf(write_hf(tmp_path / "hf", legacy))
    bert_checkpoints.save_hf(str(tmp_path / "ours"), fields, params)
    written = safetensors_numpy.load_file(str(tmp_path / "ours" / "model.safetensors"))
    assert written.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert {key: config[key] for key in HF_CONFIG} == HF_CONFIG
    fields_back, params_back = bert_checkpoints.load_hf(str(tmp_path / "ours"))
    assert fields_back == fields
    flat, flat_back = (traverse_util.flatten_dict(p) for p in (params, params_back))
    assert flat.keys() == flat_back.keys()
    for key in flat:
        np.testing.assert_array_equal(flat_back[key], flat[key], err_msg=str(key))


def test_google_tf_checkpoint_loads_as_the_hf_one(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tensors = hf_tensors(HF_CONFIG, seed=2, with_nsp=True)
    _, from_hf = bert_checkpoints.load_hf(write_hf(tmp_path / "hf", tensors))
    tf_tensors = {}
    for name, value in tensors.items():  # Google's names: "/" paths, kernels [in, out]
        tf_name = name.replace(".", "/").replace("encoder/layer/", "encoder/layer_")
        tf_name = tf_name.replace("LayerNorm/weight", "LayerNorm/gamma")
        tf_name = tf_name.replace("LayerNorm/bias", "LayerNorm/beta")
        if tf_name.endswith("embeddings/weight"):
            tf_name = tf_name.removesuffix("/weight")
        elif tf_name == "cls/seq_relationship/weight":
            tf_name = "cls/seq_relationship/output_weights"  # stored [2, H], as torch's
        elif tf_name == "cls/seq_relationship/bias":
            tf_name = "cls/seq_relationship/output_bias"
        elif tf_name == "cls/predictions/bias":
            tf_name = "cls/predictions/output_bias"
        elif tf_name.endswith("/weight"):
            tf_name, value = tf_name.removesuffix("/weight") + "/kernel", value.T
        tf_tensors[tf_name] = value
    tf_tensors["global_step"] = np.int64(7)  # optimiser-side variables are ignored
    prefix = str(tmp_path / "bert_model.ckpt")
    names = sorted(tf_tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tf_tensors[name]) for name in names],
    )  # fmt: skip
    (tmp_path / "bert_config.json").write_text(json.dumps(HF_CONFIG))
    fields, from_tf = bert_checkpoints.load_tf(prefix, str(tmp_path / "bert_config.json"))
    assert fields["with_nsp"]
    flat_hf, flat_tf = (traverse_util.flatten_dict(p) for p in (from_hf, from_tf))
    assert flat_hf.keys() == flat_tf.keys()
    for key in flat_hf:
        np.testing.assert_array_equal(flat_tf[key], flat_hf[key], err_msg=str(key))


def test_other_size_and_unsupported_config_are_named(tmp_path):
    tensors = hf_tensors(dict(HF_CONFIG, intermediate_size=20))
    with pytest.raises(ShapeMismatchError) as error:
        bert_checkpoints.load_hf(write_hf(tmp_path / "small", tensors))
    message = str(error.value)
    assert "\n" not in message
    assert "bert.encoder.layer.0.intermediate.dense.weight has shape (20, 16)" in message
    assert "needs (24, 16)" in message
    headless = {k: v for k, v in hf_tensors(HF_CONFIG).items() if k != "cls.predictions.bias"}
    with pytest.raises(ShapeMismatchError, match="tensor cls.predictions.bias .* missing"):
        bert_checkpoints.load_hf(write_hf(tmp_path / "headless", headless))
    with pytest.raises(ValueError, match="hidden_act='gelu_new'"):
        bert_checkpoints.load_hf(
            write_hf(
                tmp_path / "tanh", hf_tensors(HF_CONFIG), dict(HF_CONFIG, hidden_act="gelu_new")
            )
        )
