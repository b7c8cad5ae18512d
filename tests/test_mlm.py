"""BERT MLM: masking statistics, mlm_loss vs NumPy, tied decoder, padding invariance, and the MLM
step on 8 simulated devices against one device on the global batch, resume after a SIGKILL."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from resume import assert_bitwise_equal, kill_and_resume, kill_rng

from configs import bert_mlm_ptb
from ssl_jax import losses, masking, train
from ssl_jax.core import checkpoint, optim, parallel
from ssl_jax.methods import mlm
from ssl_jax.models.bert import BertTiny
from ssl_jax.text.tokenizer import RESERVED_TOKENS, Vocab

VOCAB = Vocab(RESERVED_TOKENS + tuple(f"w{i}" for i in range(40)) + ("##a", "##b"))
SPECIAL = VOCAB.special_ids  # (0, 1, 2, 3, 4)
MASK_KW = dict(mask_id=4, vocab_size=VOCAB.size, special_ids=SPECIAL)


def random_sequences(rng, batch, length, pad_max=8):
    """[CLS] random non-special tokens [SEP] then 0..pad_max padding."""
    ids = rng.integers(5, VOCAB.size, (batch, length)).astype(np.int32)
    lengths = length - rng.integers(0, pad_max + 1, batch)
    for row, n in enumerate(lengths):
        ids[row, 0], ids[row, n - 1], ids[row, n:] = 2, 3, 0
    return ids


def test_masking_statistics():
    ids = random_sequences(np.random.default_rng(0), 2000, 64)
    inputs, positions, labels, weights = map(
        np.asarray,
        masking.mask_tokens(jax.random.PRNGKey(0), ids, max_predictions=12, **MASK_KW),
    )
    candidates = ~np.isin(ids, SPECIAL)
    # The count per sequence is exact: round(15% of its non-special tokens).
    expected = np.round(0.15 * candidates.sum(1))
    np.testing.assert_array_equal(weights.sum(1), expected)
    rows = np.repeat(np.arange(len(ids))[:, None], positions.shape[1], 1)
    used = weights > 0
    chosen = np.zeros(ids.shape, bool)
    chosen[rows[used], positions[used]] = True
    assert chosen.sum() == used.sum()  # positions of a row are distinct
    assert not chosen[~candidates].any()  # never special tokens nor padding
    np.testing.assert_array_equal(labels[used], ids[rows[used], positions[used]])
    assert (labels[~used] == 0).all() and (positions[~used] == 0).all()
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # only chosen ones change
    assert (used[:, 1:] <= used[:, :-1]).all()  # used slots come first ...
    assert (np.diff(positions, axis=1)[used[:, 1:]] > 0).all()  # ... in ascending order
    # 80/10/10 over ~16k chosen tokens: binomial sd <= 0.0032, tolerance 5 sd.
    got = inputs[chosen]
    original = ids[chosen]
    non_special = VOCAB.size - len(SPECIAL)
    assert abs(np.mean(got == 4) - 0.8) < 0.016
    assert abs(np.mean((got != 4) & (got != original)) - 0.1 * (1 - 1 / non_special)) < 0.012
    assert abs(np.mean(got == original) - 0.1 * (1 + 1 / non_special)) < 0.012
    assert not np.isin(got[got != 4], SPECIAL).any()  # random replacements are never special
    # Every position of the body is chosen about equally often (no positional bias).
    per_position = chosen[:, 1:50].mean(0)
    assert per_position.min() > 0.10 and per_position.max() < 0.20


def test_whole_word_masking_never_splits_a_word():
    rng = np.random.default_rng(1)
    ids = random_sequences(rng, 500, 48)
    word_starts = rng.random(ids.shape) < 0.5
    word_starts[:, 1] = True
    inputs, positions, labels, weights = map(
        np.asarray,
        masking.mask_tokens(
            jax.random.PRNGKey(3), ids, max_predictions=10, word_starts=word_starts, **MASK_KW
        ),
    )
    candidates = ~np.isin(ids, SPECIAL)
    for row in range(len(ids)):
        chosen = np.zeros(ids.shape[1], bool)
        chosen[positions[row][weights[row] > 0]] = True
        starts = word_starts[row] | ~candidates[row] | ~np.r_[False, candidates[row][:-1]]
        word = np.maximum.accumulate(np.where(starts, np.arange(ids.shape[1]), 0))
        for w in np.unique(word[candidates[row]]):
            members = chosen[(word == w) & candidates[row]]
            assert members.all() or not members.any(), f"row {row} splits word at {w}"
        budget = np.round(0.15 * candidates[row].sum())
        assert 0 < chosen.sum() <= budget
    assert weights.sum() / np.round(0.15 * candidates.sum(1)).sum() > 0.9


def test_masks_depend_on_key_and_example_id_only():
    ids = random_sequences(np.random.default_rng(2), 8, 32)
    kw = dict(max_predictions=6, **MASK_KW)
    full = masking.mask_tokens(jax.random.PRNGKey(5), ids, **kw)
    half = masking.mask_tokens(jax.random.PRNGKey(5), ids[4:], example_ids=np.arange(4, 8), **kw)
    for a, b in zip(full, half, strict=True):
        np.testing.assert_array_equal(np.asarray(a)[4:], b)
    other = masking.mask_tokens(jax.random.PRNGKey(6), ids, **kw)
    assert not np.array_equal(full[1], other[1])


def test_mask_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="token_ids"):
        masking.mask_tokens(
            jax.random.PRNGKey(0), np.zeros(5, np.int32), max_predictions=2, **MASK_KW
        )
    with pytest.raises(ValueError, match="mask_rate"):
        masking.mask_tokens(
            jax.random.PRNGKey(0), np.zeros((1, 5), np.int32), max_predictions=2, mask_rate=0,
            **MASK_KW,
        )  # fmt: skip


def numpy_mlm_loss(logits, labels, weights):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    correct = logits.argmax(-1) == labels
    return (nll * weights).sum() / weights.sum(), (correct * weights).sum() / weights.sum()


def test_mlm_loss_matches_numpy_and_global_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, (8, 5))
    weights = (rng.random((8, 5)) < 0.6).astype(np.float32)
    want = numpy_mlm_loss(logits.astype(np.float64), labels, weights)
    got = jax.jit(losses.mlm_loss)(logits, labels, weights)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Sharded over 8 devices with unequal weight counts per device: still the global mean.
    mesh = parallel.make_mesh()
    sharded = jax.jit(
        jax.shard_map(
            lambda *a: losses.mlm_loss(*a, axis_name=parallel.DATA_AXIS), mesh=mesh,
            in_specs=P(parallel.DATA_AXIS), out_specs=P(),
        )
    )(logits, labels, weights)  # fmt: skip
    np.testing.assert_allclose(sharded, want, rtol=1e-5)
    with pytest.raises(ValueError, match="mlm_loss"):
        losses.mlm_loss(logits, labels[:, :2], weights)


@pytest.fixture(scope="module")
def tiny_bert():
    model = BertTiny(vocab_size=VOCAB.size, max_position=32, dropout_rate=0.0)
    ids = random_sequences(np.random.default_rng(4), 3, 16, pad_max=5)
    init = jax.jit(lambda rng: model.init(rng, ids, None, np.zeros((3, 2), np.int32)))
    return model, init(jax.random.PRNGKey(0))["params"], ids


def apply(model, params, *args, **kwargs):
    return jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kwargs))(params, *args)


def test_decoder_is_the_word_embedding(tiny_bert):
    model, params, ids = tiny_bert
    assert "kernel" not in str(jax.tree_util.tree_structure(params["mlm_bias"]))
    positions = np.array([[1, 2]] * 3, np.int32)
    unused = next(t for t in range(5, VOCAB.size) if t not in ids)
    logits, _ = apply(model, params, ids, None, positions)
    table = params["word_embeddings"]["embedding"]
    edited = jax.tree.map(lambda x: x, params)
    edited["word_embeddings"]["embedding"] = table.at[unused].set(0.0)
    edited_logits, _ = apply(model, edited, ids, None, positions)
    # The token is in no input, so only its decoder row changed: its logit is the bias alone.
    np.testing.assert_allclose(edited_logits[..., unused], params["mlm_bias"][unused], atol=1e-6)
    others = np.arange(VOCAB.size) != unused
    np.testing.assert_allclose(edited_logits[..., others], logits[..., others], atol=1e-6)
    assert np.abs(logits[..., unused] - params["mlm_bias"][unused]).max() > 1e-3


def test_padding_does_not_change_real_tokens(tiny_bert):
    model, params, _ = tiny_bert
    ids = random_sequences(np.random.default_rng(5), 2, 12, pad_max=0)
    padded = np.concatenate([ids, np.zeros((2, 9), np.int32)], axis=1)
    short, _ = apply(model, params, ids, method=model.encode)
    long, _ = apply(model, params, padded, method=model.encode)
    np.testing.assert_allclose(long[:, :12], short, atol=1e-5)
    positions = np.array([[3, 7]] * 2, np.int32)
    np.testing.assert_allclose(
        apply(model, params, padded, None, positions)[0],
        apply(model, params, ids, None, positions)[0],
        atol=1e-5,
    )


def test_weight_decay_skips_layer_norm_and_biases_not_embeddings(tiny_bert):
    _, params, _ = tiny_bert
    mask = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(
        optim.decay_mask(params))}  # fmt: skip
    assert mask["['word_embeddings']['embedding']"]
    assert mask["['layers_0']['ffn_in']['kernel']"]
    assert not mask["['layers_0']['ffn_norm']['scale']"]
    assert not mask["['layers_0']['ffn_in']['bias']"]
    assert not mask["['mlm_bias']"]


def tiny_config():
    config = bert_mlm_ptb.get_config()
    config.text.max_seq_len = 16
    config.mlm.max_predictions = 4
    config.model.max_position = 16
    config.text.whole_word_masking = True
    return config


def run_steps(devices, batch, num_steps):
    config = tiny_config()
    mesh = parallel.make_mesh(devices)
    method = mlm.make(config, None, parallel.DATA_AXIS, vocab=VOCAB)
    schedule = optim.make_schedule(1e-2, total_steps=10, warmup_steps=1, kind="linear")
    tx = optim.make_optimizer("adamw", schedule, weight_decay=0.01)
    state = train.create_state(method, tx, 0, batch, mesh)
    step_fn = train.make_train_step(method, tx, mesh)
    first, losses_ = jax.device_get(state.params), []
    for _ in range(num_steps):
        state, metrics = step_fn(state, parallel.to_global(batch, mesh))
        losses_.append({k: float(v) for k, v in metrics.items()})
    return first, jax.device_get(state), losses_


@pytest.mark.slow
def test_mlm_step_on_8_devices_equals_one_device_on_global_batch():
    rng = np.random.default_rng(6)
    ids = random_sequences(rng, 16, 16, pad_max=6)
    batch = {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "word_starts": rng.random(ids.shape) < 0.7,
    }
    assert jax.device_count() == 8
    first, sharded, sharded_metrics = run_steps(jax.devices(), batch, 2)
    _, single, single_metrics = run_steps(jax.devices()[:1], batch, 2)
    for got, want in zip(sharded_metrics, single_metrics, strict=True):
        for name in ("loss", "mlm_accuracy", "perplexity", "grad_norm"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    assert sharded_metrics[0]["perplexity"] > 10  # a real loss, not zeros
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(sharded.params), jax.tree.leaves(single.params),
        strict=True,
    ):  # fmt: skip
        # atol 1e-3 x the learning rate: Adam's first steps are ~lr * sign(g), so entries whose
        # gradient is ~0 (e.g. attention key biases: softmax ignores them) turn float-rounding
        # differences between 1 and 8 devices into steps of up to ~1e-6.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(path))
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), single.params, first)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_encode_mean_pools_real_tokens_only():
    config = tiny_config()
    method = mlm.make(config, vocab=VOCAB)
    ids = random_sequences(np.random.default_rng(7), 2, 16, pad_max=0)
    variables = jax.jit(method.init)(jax.random.PRNGKey(0), {"token_ids": ids})
    encode = jax.jit(method.encode)
    features = np.asarray(encode(variables, ids))
    assert features.shape == (2, 128)
    padded = np.concatenate([ids, np.zeros((2, 0), np.int32)], 1)
    padded[:, 12:] = 0  # shorter sequences: the mean covers their 12 tokens only
    model = mlm.build_model(config, VOCAB)
    hidden, _ = apply(model, variables["params"], padded, method=model.encode)
    np.testing.assert_allclose(encode(variables, padded), hidden[:, :12].mean(1), atol=1e-5)


def test_validate_names_the_field():
    config = tiny_config()
    config.mlm.max_predictions = 100
    with pytest.raises(ValueError, match="max_predictions"):
        mlm.validate(config, 16)
    config = tiny_config()
    config.model.name = "resnet18"
    with pytest.raises(ValueError, match="model.name"):
        mlm.validate(config, 16)


@pytest.mark.slow
def test_mlm_run_sigkilled_at_a_random_moment_resumes_identically(tmp_path):
    """Masks, dropout, the text stream's position and AdamW's moments survive a SIGKILL."""
    from ssl_jax import tasks

    config = bert_mlm_ptb.get_config("runlocal")
    if tasks.of_method(config.method).problem(config):
        pytest.skip(f"{tasks.of_method(config.method).problem(config)} (.ci/run prepares it)")
    config.total_steps = 5
    config.checkpoint_every_steps = 1
    config.keep_checkpoints = 2
    config.eval_every_steps = 100
    train.run(config, str(tmp_path / "straight"))
    overrides = [
        "--config=configs/bert_mlm_ptb.py:runlocal",
        "--config.total_steps=5",
        "--config.checkpoint_every_steps=1",
        "--config.keep_checkpoints=2",
        "--config.eval_every_steps=100",
    ]
    kill_and_resume(tmp_path / "resumed", overrides, config.total_steps, kill_rng())
    straight = checkpoint.Checkpointer(str(tmp_path / "straight")).restore_arrays(5)
    assert_bitwise_equal(
        checkpoint.Checkpointer(str(tmp_path / "resumed")).restore_arrays(5), straight
    )
