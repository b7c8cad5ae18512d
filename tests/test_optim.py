"""Optimiser masks and schedules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import models, optim


def test_decay_mask_excludes_biases_and_norm_parameters():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 4))},
        "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
        "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
    }
    mask = optim.decay_mask(params)
    assert mask == {
        "conv": {"kernel": True},
        "dense": {"kernel": True, "bias": False},
        "bn": {"scale": False, "bias": False},
    }


def test_lars_leaves_masked_parameters_to_plain_momentum_sgd():
    """With the bias masked, its update is -lr * grad (no decay, no trust ratio) on step one."""
    params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}
    grads = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
    tx = optim.make_optimizer("lars", lambda step: 0.1, weight_decay=0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["bias"], -0.1 * 0.5 * np.ones(2), rtol=1e-6)
    # The kernel's update follows LARS: trust ratio 1e-3 * |w| / |g + wd w| on the decayed grad.
    decayed = 0.5 + 0.01 * 3.0
    trust = 1e-3 * np.linalg.norm(np.full((2, 2), 3.0)) / np.linalg.norm(np.full((2, 2), decayed))
    np.testing.assert_allclose(updates["kernel"], -0.1 * trust * decayed, rtol=1e-5)


def test_warmup_cosine_schedule_values():
    schedule = optim.make_schedule(1.0, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(55)), 0.5 * (1 + np.cos(np.pi * 0.5)), atol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-7)


def test_peak_learning_rate_scaling():
    assert optim.peak_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert optim.peak_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    with pytest.raises(ValueError, match="lr_scaling"):
        optim.peak_learning_rate(0.3, 256, "cubic")


def _params_and_owners(model, *inputs):
    """Parameter shapes of ``model`` (by ``jax.eval_shape``) and the class of each module."""
    owners = {}

    def record(method, args, kwargs, context):
        owners[context.module.path] = type(context.module)
        return method(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    return variables["params"], owners


def _expected_decay(path, owners) -> bool:
    """The rule stated by what each parameter is, read from its module's class."""
    names = tuple(key.key for key in path)
    owner, leaf = owners[names[:-1]], names[-1]
    if any("frozen" in name for name in names):
        return False
    if issubclass(owner, (nn.LayerNorm, nn.BatchNorm)):
        return False  # a norm's scale and offset
    if issubclass(owner, (nn.Dense, nn.DenseGeneral, nn.Conv, nn.Embed)):
        assert leaf in ("kernel", "bias", "embedding"), names
        return leaf != "bias"
    # Parameters a model declares itself: BERT's MLM output bias, ViT's [CLS] token.
    return {"mlm_bias": False, "cls": True}[leaf]


TINY_MODELS = {
    "bert": lambda: (
        models.Bert(
            vocab_size=32, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
            max_position=8, with_nsp=True,
        ),
        jnp.zeros((2, 8), jnp.int32),
    ),  # fmt: skip
    "vit": lambda: (
        models.ViT(width=8, depth=2, num_heads=2, mlp_dim=16, patch_size=4),
        jnp.zeros((2, 8, 8, 3)),
    ),
    "vit_frozen_patch_embed": lambda: (
        models.ViT(width=8, depth=1, num_heads=2, mlp_dim=16, patch_size=4,
                   freeze_patch_embed=True),
        jnp.zeros((2, 8, 8, 3)),
    ),  # fmt: skip
    "resnet10": lambda: (models.ResNet10(width_multiplier=0.125), jnp.zeros((2, 16, 16, 3))),
    "resnet50": lambda: (
        models.ResNet50(width_multiplier=0.0625, stem="imagenet"),
        jnp.zeros((2, 32, 32, 3)),
    ),
    "head_with_bn": lambda: (models.ProjectionHead(8, 4, num_layers=3), jnp.zeros((2, 6))),
    "head_without_bn": lambda: (
        models.ProjectionHead(8, 4, num_layers=3, use_bn=False),
        jnp.zeros((2, 6)),
    ),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_decay_mask_on_real_models_decays_kernels_and_embeddings_only(name):
    params, owners = _params_and_owners(*TINY_MODELS[name]())
    mask = optim.decay_mask(params)
    expected = jax.tree_util.tree_map_with_path(lambda p, _: _expected_decay(p, owners), params)
    wrong = {
        jax.tree_util.keystr(path): got
        for (path, got), want in zip(
            jax.tree_util.tree_leaves_with_path(mask), jax.tree.leaves(expected), strict=True
        )
        if got != want
    }
    assert not wrong, f"decay_mask is wrong for: {wrong}"
    assert any(jax.tree.leaves(mask)) and not all(jax.tree.leaves(mask))


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_attention_biases_of_shape_heads_by_head_dim_are_not_decayed(name):
    params, _ = _params_and_owners(*TINY_MODELS[name]())
    mask = optim.decay_mask(params)
    qkv = {
        jax.tree_util.keystr(path): (leaf.shape, decayed)
        for (path, leaf), decayed in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(mask), strict=True
        )
        if path[-1].key == "bias" and path[-2].key in ("query", "key", "value")
    }
    assert len(qkv) == 2 * 3, qkv  # two layers (BERT) or blocks (ViT)
    assert all(shape == (2, 4) and not decayed for shape, decayed in qkv.values()), qkv


def test_lars_trust_ratio_and_decay_skip_every_bias_and_norm_parameter_of_bert():
    """Masked leaves get plain momentum SGD on step one (-lr * grad); the rest LARS's update."""
    shapes, owners = _params_and_owners(*TINY_MODELS["bert"]())
    params = jax.tree.map(lambda s: jnp.full(s.shape, 3.0), shapes)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
    tx = optim.make_optimizer("lars", lambda step: 0.1, weight_decay=0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    for (path, update), param in zip(
        jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params), strict=True
    ):
        decayed = _expected_decay(path, owners)
        if decayed:
            trust = 1e-3 * np.linalg.norm(param) / np.linalg.norm(np.full(param.shape, 0.53))
            want = -0.1 * trust * 0.53
        else:
            want = -0.1 * 0.5
        np.testing.assert_allclose(update, np.full(param.shape, want), rtol=1e-5, err_msg=str(path))
