"""Linear evaluation: the classifier against NumPy, extraction against one device, the command
end to end on a checkpointed workdir (frozen encoder untouched, caches reused)."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from test_data import needs_fashion_mnist

from configs import linear_eval as linear_eval_config
from configs import moco_v2_fashion_mnist, simclr_fashion_mnist
from ssl_jax.core import checkpoint, parallel, workdir
from ssl_jax.evaluation import classifier, features, linear, pretrained
from ssl_jax.methods import METHODS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def separable_data(rng, counts, dim=12, num_classes=5):
    """Sets of points around the same well-spaced centres: separable with a wide margin."""
    centres = rng.normal(size=(num_classes, dim)) * 6
    for count in counts:
        labels = rng.integers(0, num_classes, count)
        yield centres[labels] + rng.normal(size=(count, dim)), labels


def test_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(0)
    inputs, labels = rng.normal(size=(7, 4)), rng.integers(0, 3, 7)
    params = {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)}
    logits = inputs @ params["kernel"] + params["bias"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    want_loss = -np.mean(np.log(probs[np.arange(7), labels]))
    residual = (probs - np.eye(3)[labels]) / 7  # d loss / d logits
    params32 = jax.tree.map(lambda x: np.float32(x), params)
    loss, grads = jax.jit(jax.value_and_grad(classifier.cross_entropy_loss))(
        params32, np.float32(inputs), labels
    )
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grads["kernel"], inputs.T @ residual, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["bias"], residual.sum(0), rtol=1e-4, atol=1e-6)


def test_topk_matches_numpy_argsort():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(200, 10)), rng.integers(0, 10, 200)
    ranked = np.argsort(-logits, axis=1)
    got = classifier.topk_accuracy(logits, labels, ks=(1, 3, 5, 12))
    for k in (1, 3, 5):
        assert got[k] == pytest.approx(np.mean((ranked[:, :k] == labels[:, None]).any(1)))
    assert got[1] <= got[3] <= got[5] <= got[12] == 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_separable_data_is_learned_in_one_compile(optimizer, monkeypatch):
    chex.clear_trace_counter()
    monkeypatch.setattr(
        classifier, "train_steps", chex.assert_max_traces(classifier.train_steps, n=1)
    )
    train, test = separable_data(np.random.default_rng(2), (600, 300))
    config = linear_eval_config.get_config()
    config.update(epochs=10, batch_size=64, optimizer=optimizer, learning_rate=0.5)
    scores = classifier.fit_and_score(train, test, config, 5)
    assert scores[1] == 1.0 and scores[5] == 1.0


def test_scores_ignore_feature_scale_and_offset():
    # Standardising with train statistics makes the result invariant to affine feature maps.
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 8))
    labels = rng.integers(0, 4, 400)
    inputs = centres[labels] + rng.normal(size=(400, 8)) * 1.5  # overlapping: accuracy < 1
    config = linear_eval_config.get_config()
    config.update(epochs=5, batch_size=50)
    train, test = (inputs[:300], labels[:300]), (inputs[300:], labels[300:])
    base = classifier.fit_and_score(train, test, config, 4)
    shift = rng.normal(size=8) * 100
    moved = classifier.fit_and_score(
        (train[0] * 1000 + shift, train[1]), (test[0] * 1000 + shift, test[1]), config, 4
    )
    assert 0.3 < base[1] < 1.0 and base == pytest.approx(moved, abs=0.011)


def test_same_seed_same_classifier_other_seed_other_order():
    ((inputs, labels),) = separable_data(np.random.default_rng(4), (256,))
    fit = dict(num_classes=5, epochs=2, batch_size=32, learning_rate=0.1)
    first = classifier.train_classifier(inputs, labels, seed=0, **fit)
    again = classifier.train_classifier(inputs, labels, seed=0, **fit)
    other = classifier.train_classifier(inputs, labels, seed=1, **fit)
    np.testing.assert_array_equal(first["kernel"], again["kernel"])
    assert not np.allclose(first["kernel"], other["kernel"])


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_streamed_eight_device_classifier_equals_one_device_whole_epoch(optimizer, monkeypatch):
    # 300 rows, batches of 32: 9 steps an epoch. 2 KiB streams 2 steps at a time (the last
    # chunk padded with a dead step) over 8 devices; the reference holds each whole epoch on one.
    chex.clear_trace_counter()
    monkeypatch.setattr(
        classifier, "train_steps", chex.assert_max_traces(classifier.train_steps, n=2)
    )
    ((inputs, labels),) = separable_data(np.random.default_rng(6), (300,), dim=8)
    fit = dict(num_classes=5, epochs=3, batch_size=32, learning_rate=0.2, optimizer=optimizer)
    one = classifier.train_classifier(
        inputs, labels, mesh=parallel.make_mesh(jax.devices()[:1]), stream_bytes=2**30, **fit
    )
    streamed = classifier.train_classifier(inputs, labels, stream_bytes=2 * 32 * 8 * 4, **fit)
    assert len(streamed["kernel"].sharding.device_set) == 8
    np.testing.assert_allclose(streamed["kernel"], one["kernel"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(streamed["bias"], one["bias"], rtol=1e-4, atol=1e-6)


def test_streamed_scores_equal_whole_matrix_scores():
    train, test = separable_data(np.random.default_rng(7), (200, 150), dim=8)
    test = (test[0] + np.random.default_rng(8).normal(size=test[0].shape) * 6, test[1])
    config = linear_eval_config.get_config()
    config.update(epochs=2, batch_size=40)
    whole = classifier.fit_and_score(train, test, config, 5, stream_bytes=2**30)
    # 40 test rows at a time: 4 chunks, the last one padded.
    streamed = classifier.fit_and_score(train, test, config, 5, stream_bytes=40 * 8 * 4)
    assert 0.3 < whole[1] < 1.0 and streamed == whole


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs=0 must be a positive integer"),
        ("optimizer", "adam", "optimizer='adam' must be one of"),
        ("learning_rate", 0.0, "learning_rate=0.0 must be > 0"),
        ("max_train_examples", 0, "max_train_examples=0 must be positive"),
        ("bbc_max_articles", 0, "bbc_max_articles=0 must be positive"),
    ],
)
def test_bad_config_is_named(field, value, message):
    config = linear_eval_config.get_config("runlocal")
    config[field] = value
    with pytest.raises(linear.LinearEvalError, match=message):
        linear.validate_config(config)


def random_variables(method, seed):
    """He-normal kernels, unit BN scales and variances, zero biases and means, in the shapes
    ``method.init`` gives (traced, not compiled: compiling an init takes ~15 s of CPU here)."""
    sample = {"image": np.zeros((2, 28, 28, 1), np.uint8)}
    shapes = jax.eval_shape(method.init, jax.random.PRNGKey(0), sample)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if len(leaf.shape) > 1:
            fan_in = np.prod(leaf.shape[:-1])
            return (rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in)).astype(leaf.dtype)
        one = name.endswith("['scale']") or name.endswith("['var']")
        return np.full(leaf.shape, 1.0 if one else 0.0, leaf.dtype)

    drawn = jax.tree_util.tree_map_with_path(draw, shapes)
    return {"params": drawn["params"], "batch_stats": drawn["batch_stats"]}


def make_pretrain_workdir(path, config_module, *, steps=(2, 4)):
    """A workdir as the trainer leaves it: config.json and checkpoints of params and BN stats.

    Each step holds other random weights, standing in for training (the trainer is tested in
    test_end_to_end.py; a runlocal pretraining costs over a minute on these cores).
    """
    config = config_module.get_config("runlocal")
    assert workdir.check_and_record_config(config, str(path)) is None
    method = METHODS[config.method].make(config, 28, None, total_steps=4)
    checkpoints = checkpoint.Checkpointer(str(path), async_save=False)
    for step in steps:
        checkpoints.save(step, {"step": np.int32(step), **random_variables(method, step)})
    checkpoints.close()
    return str(path)


def file_digests(root):
    digests = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def test_extraction_on_eight_devices_equals_one_device(simclr_workdir):
    encoder = pretrained.load(simclr_workdir)
    rng = np.random.default_rng(5)
    pictures = rng.integers(0, 256, (37, 28, 28, 1), dtype=np.uint8)  # 37: a padded batch
    labels = np.arange(37, dtype=np.int32)
    assert jax.device_count() == 8
    got = {}
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = parallel.make_mesh(devices)
        replicated = jax.device_put(encoder.variables, parallel.replicated(mesh))
        got[len(devices)] = features.extract_features(
            encoder.method.encode, replicated, pictures, labels, mesh, batch_size=16
        )
    np.testing.assert_array_equal(got[8][1], labels)
    np.testing.assert_array_equal(got[1][1], labels)
    np.testing.assert_allclose(got[8][0], got[1][0], rtol=1e-5, atol=1e-6)
    whole = jax.jit(encoder.method.encode)(encoder.variables, pictures)  # one call, no padding
    np.testing.assert_allclose(got[8][0], whole, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def simclr_workdir(tmp_path_factory):
    return make_pretrain_workdir(tmp_path_factory.mktemp("simclr"), simclr_fashion_mnist)


def counting_extraction(monkeypatch):
    calls, extract_features = [], features.extract_features

    def extract(*args, **kwargs):
        calls.append(len(args[2]))
        return extract_features(*args, **kwargs)

    monkeypatch.setattr(linear.features, "extract_features", extract)
    return calls


@needs_fashion_mnist
def test_linear_eval_end_to_end_leaves_the_encoder_untouched(simclr_workdir, monkeypatch):
    wd = simclr_workdir
    checkpoints = checkpoint.Checkpointer(wd, async_save=False)
    before = checkpoints.restore_arrays(4)
    checkpoints.close()
    files_before = file_digests(os.path.join(wd, "checkpoints"))
    config_before = file_digests(wd)["config.json"]

    calls = counting_extraction(monkeypatch)
    load = pretrained.load

    def cheap_random_init(workdir, step=None, *, random_init=False):
        # The real random init compiles the method's init (~15 s of CPU); its weights are
        # pretrained.load's business, the plumbing around them is tested here.
        run = load(workdir, step)
        if not random_init:
            return run
        return dataclasses.replace(run, variables=random_variables(run.method, 0), step=None)

    monkeypatch.setattr(pretrained, "load", cheap_random_init)
    config = linear_eval_config.get_config("runlocal")
    results = linear.run(config, wd)
    assert calls == [256, 128, 256, 128]  # train and test, pretrained and random init
    output = os.path.join(wd, "linear_eval")
    with open(os.path.join(output, "results.json")) as f:
        saved = json.load(f)
    assert saved["step"] == 4 and {k: saved[k] for k in results} == results
    for suffix in ("", "_random_init", "_pixels"):
        top1, top5 = results[f"linear_top1{suffix}"], results[f"linear_top5{suffix}"]
        assert 0.1 < top1 <= top5 <= 1.0, results
        assert top1 * 128 == int(top1 * 128)  # a fraction of the 128 test images
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(output))
    assert not [name for name in os.listdir(output) if ".tmp" in name]
    assert os.path.exists(os.path.join(output, "features_random_init_train.npz"))

    # Bitwise the same checkpoint, same files, same recorded config.
    checkpoints = checkpoint.Checkpointer(wd, async_save=False)
    after = checkpoints.restore_arrays(4)
    checkpoints.close()
    for name in ("params", "batch_stats"):
        chex.assert_trees_all_equal(before[name], after[name])
    assert file_digests(os.path.join(wd, "checkpoints")) == files_before
    assert file_digests(wd)["config.json"] == config_before

    # Second call: every split from the cache, same numbers.
    calls.clear()
    assert linear.run(config, wd) == results and calls == []

    # A cache made for fewer examples is recomputed; the test split's stays.
    config.update(max_train_examples=192, compare_random_init=False, compare_pixels=False)
    linear.run(config, wd)
    assert calls == [192]

    # An older checkpoint gets its own caches and results.
    config.update(step=2, max_train_examples=256)
    calls.clear()
    linear.run(config, wd)
    assert calls == [256, 128]
    with open(os.path.join(output, "results.json")) as f:
        assert json.load(f)["step"] == 2
    with np.load(os.path.join(output, "features_step2_test.npz")) as older:
        with np.load(os.path.join(output, "features_step4_test.npz")) as newer:
            assert not np.allclose(older["features"], newer["features"])


def test_workdirs_without_a_run_or_checkpoint_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = linear_eval_config.get_config("runlocal")
    with pytest.raises(linear.LinearEvalError, match="holds no config.json"):
        linear.run(config, str(empty))
    assert os.listdir(empty) == []

    from configs import bert_mlm_ptb
    from ssl_jax.text import data as text

    # A text run gets the BBC News probe (tests/test_bbc_probe.py), from its checkpoint and vocab.
    text_config = bert_mlm_ptb.get_config("runlocal")
    if os.path.isfile(text.describe_config(text_config).vocab_path):
        text_run = tmp_path / "mlm"
        workdir.check_and_record_config(text_config, str(text_run))
        with pytest.raises(linear.LinearEvalError, match="no checkpoint in .*pretrain in this"):
            linear.run(config, str(text_run))
        assert sorted(os.listdir(text_run)) == ["config.json"]
    text_config.text.vocab_path = str(tmp_path / "moved.txt")
    moved = tmp_path / "moved_vocab"
    workdir.check_and_record_config(text_config, str(moved))
    with pytest.raises(linear.LinearEvalError, match="vocab file .*moved.txt.* does not exist"):
        linear.run(config, str(moved))

    untrained = tmp_path / "untrained"
    workdir.check_and_record_config(simclr_fashion_mnist.get_config("runlocal"), str(untrained))
    with pytest.raises(linear.LinearEvalError, match="no checkpoint in .*pretrain in this"):
        linear.run(config, str(untrained))
    assert sorted(os.listdir(untrained)) == ["config.json"]  # no checkpoints/ created


def test_unsaved_step_is_named(simclr_workdir):
    config = linear_eval_config.get_config("runlocal")
    config.step = 3
    with pytest.raises(linear.LinearEvalError, match=r"step=3 has no checkpoint .* \[2, 4\]"):
        linear.run(config, simclr_workdir)


@needs_fashion_mnist
def test_moco_encoder_is_evaluated(tmp_path):
    wd = make_pretrain_workdir(tmp_path, moco_v2_fashion_mnist, steps=(4,))
    config = linear_eval_config.get_config("runlocal")
    config.update(compare_random_init=False, compare_pixels=False)
    results = linear.run(config, wd)
    assert set(results) == {"linear_top1", "linear_top5"}
    assert 0.1 < results["linear_top1"] <= results["linear_top5"] <= 1.0


def test_command_prints_one_error_line(tmp_path):
    command = [
        sys.executable, "-m", "ssl_jax.linear_eval", "--config=configs/linear_eval.py:runlocal",
        f"--workdir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "holds no config.json" in last_line
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []
