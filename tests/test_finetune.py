"""Fine-tuning: frozen leaves the encoder bitwise alone, end to end moves it; balanced subsets.

Bad input is named before anything compiles. A tiny ResNet on 8 px images keeps it cheap.
"""

import jax
import numpy as np
import pytest
from PIL import Image

from configs import finetune as finetune_config
from ssl_jax import finetune
from ssl_jax.models import ResNet10, load_encoder
from ssl_jax.models.interop import exported


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    module = ResNet10(width_multiplier=0.125, stem="small")
    shapes = jax.eval_shape(
        lambda x: module.init(jax.random.PRNGKey(0), x, train=False), np.zeros((1, 8, 8, 1))
    )
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda s: (rng.normal(size=s.shape) * 0.3 + 0.5).astype(s.dtype), shapes
    )
    variables = jax.tree.map(np.abs, variables)  # positive BN variances
    out = str(tmp_path_factory.mktemp("export") / "tiny")
    metadata = {
        "kind": "image", "model": {"name": "resnet10", "width_multiplier": 0.125, "stem": "small"},
        "input": {"image_size": 8, "channels": 1}, "feature_dim": 64,
    }  # fmt: skip
    exported.write(out, variables, metadata)
    return out


def tiny_data(seed, count):
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 4
    images = rng.integers(0, 60, (count, 8, 8, 1)) + 40 * labels[:, None, None, None]
    return images.astype(np.uint8), labels.astype(np.int32)


def config(**overrides):
    base = finetune_config.get_config()
    base.update(dict(steps=3, batch_size=16, eval_batch_size=32, learning_rate=0.5) | overrides)
    return base


def flat(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


@pytest.mark.slow  # ~35 s on 2 busy cores: two train steps and three evals compile
def test_frozen_keeps_the_encoder_bitwise_and_end_to_end_moves_it(tiny_export):
    encoder = load_encoder(tiny_export)
    before = jax.tree.map(np.copy, encoder.variables)
    train, test = tiny_data(0, 32), tiny_data(1, 32)
    top1, after = finetune.transfer(encoder, encoder.variables, train, test, 4, config(),
                                    mode="frozen")  # fmt: skip
    for (path, a), (_, b) in zip(flat(after), flat(before), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert 0.25 < top1 <= 1.0  # four balanced classes that pixel brightness separates
    _, tuned = finetune.transfer(encoder, encoder.variables, train, test, 4, config(),
                                 mode="end_to_end")  # fmt: skip
    changed = {
        jax.tree_util.keystr(path)[:10]: not np.array_equal(a, b)
        for (path, a), (_, b) in zip(flat(tuned), flat(before), strict=True)
    }
    assert changed == {"['params']": True, "['batch_st": True}
    assert all(
        not np.array_equal(a, b)
        for (path, a), (_, b) in zip(flat(tuned["params"]), flat(before["params"]), strict=True)
        if jax.tree_util.keystr(path).endswith("['kernel']")
    )
    for (_, a), (_, b) in zip(flat(encoder.variables), flat(before), strict=True):
        np.testing.assert_array_equal(a, b)  # the caller's copy is not donated or mutated


@pytest.mark.parametrize("fraction, per_class", [(0.02, 5), (0.1, 25), (0.5, 125)])
def test_label_fraction_takes_a_seeded_balanced_subset(fraction, per_class):
    labels = np.repeat(np.arange(10), np.arange(10) * 20 + 160)  # 160..340 per class, N=2500
    subset = finetune.balanced_subset(labels, fraction, 10, seed=3)
    assert len(subset) == len(set(subset.tolist())) == 10 * per_class
    assert np.bincount(labels[subset], minlength=10).tolist() == [per_class] * 10
    np.testing.assert_array_equal(subset, finetune.balanced_subset(labels, fraction, 10, seed=3))
    assert not np.array_equal(subset, finetune.balanced_subset(labels, fraction, 10, seed=4))
    assert len(finetune.balanced_subset(labels, 1.0, 10, seed=3)) == 2500


def test_bad_input_is_named_before_compiling(tiny_export, tmp_path):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(event) if "backend_compile" in event else None
    )
    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "rgb" / split / label).mkdir(parents=True)
            Image.new("RGB", (12, 12)).save(tmp_path / "rgb" / split / label / "0.png")
    cases = [
        (dict(mode="partial"), "mode='partial'"),
        (dict(label_fraction=0.0), "label_fraction=0.0"),
        (dict(encoder=None), "config.encoder"),
        (dict(encoder=str(tmp_path)), "neither encoder.json"),
        (dict(dataset=f"folder:{tmp_path}/rgb"), "12x12x3 images, the encoder takes 8x8x1"),
    ]
    for overrides, message in cases:
        settings = config(encoder=tiny_export, dataset="mnist")
        settings.update(overrides)
        with pytest.raises(finetune.FinetuneError, match=message) as error:
            finetune.run(settings)
        assert "\n" not in str(error.value)
    labels = np.array([0] * 5 + [1] * 95)
    with pytest.raises(finetune.FinetuneError, match="class 0, which has 5"):
        finetune.balanced_subset(labels, 0.2, 2, seed=0)
    assert not compiles
