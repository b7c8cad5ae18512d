"""Optimiser masks and schedules."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import bert_base_wikipedia, bert_mlm_ptb, moco_v2_imagenet
from ssl_jax import models
from ssl_jax.core import optim


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
            vocab_size=32,
            hidden_size=8,
            num_layers=2,
            num_heads=2,
            intermediate_size=16,
            max_position=8,
            with_nsp=True,
        ),
        jnp.zeros((2, 8), jnp.int32),
    ),  # fmt: skip
    "vit": lambda: (
        models.ViT(width=8, depth=2, num_heads=2, mlp_dim=16, patch_size=4),
        jnp.zeros((2, 8, 8, 3)),
    ),
    "vit_frozen_patch_embed": lambda: (
        models.ViT(
            width=8, depth=1, num_heads=2, mlp_dim=16, patch_size=4, freeze_patch_embed=True
        ),
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


def _apply(tx, params, grads_per_step):
    state = tx.init(params)
    for grads in grads_per_step:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _toy_tree(value):
    """A kernel, a bias and a norm scale: what decay masks tell apart."""
    full = functools.partial(np.full, fill_value=value, dtype=np.float32)
    return {"dense": {"kernel": full((2, 3)), "bias": full(3)}, "norm": {"scale": full(3)}}


def test_bert_linear_schedule_is_bert_s_closed_form():
    """google-research/bert: polynomial (power 1) decay from step 0 to T, warm-up overriding it."""
    peak, total, warmup = 2.0, 100, 10
    schedule = jax.jit(optim.make_schedule(peak, total, warmup, kind="bert_linear"))
    for step in (0, 1, 5, 9, 10, 11, 50, 99, 100, 120):
        want = peak * step / warmup if step < warmup else peak * max(1 - step / total, 0.0)
        np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6, atol=1e-7)
    no_warmup = optim.make_schedule(peak, total, 0, kind="bert_linear")
    np.testing.assert_allclose(float(no_warmup(30)), peak * 0.7, rtol=1e-6)


def test_bert_configs_train_with_google_bert_s_optimizer():
    """3 steps of text_base's AdamW against AdamWeightDecayOptimizer + clip_by_global_norm(1.0).

    google-research/bert optimization.py: m, v without bias correction, m / (sqrt(v) + 1e-6),
    decay 0.01 * param added unless the name has LayerNorm or bias, times the learning rate;
    gradients clipped to global norm 1.0 first.
    """
    config = bert_base_wikipedia.get_config()
    assert (config.adam_eps, config.adam_bias_correction, config.clip_global_norm) == (
        1e-6, False, 1.0,
    )  # fmt: skip
    assert config.schedule == "bert_linear"
    total, warmup = 10, 2
    schedule, tx = optim.from_config(config, total_steps=total, warmup_steps=warmup)
    params = _toy_tree(0.5)
    steps = [_toy_tree(3.0), _toy_tree(-0.2), _toy_tree(0.01)]  # the first one is clipped
    got = _apply(tx, params, steps)

    want, m, v = jax.tree.map(np.float64, params), None, None
    decayed = {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}
    for step, grads in enumerate(steps):
        norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
        grads = jax.tree.map(lambda g, norm=norm: g * min(1.0, 1.0 / norm), grads)
        m = jax.tree.map(lambda g: 0.1 * g, grads) if m is None else jax.tree.map(
            lambda m_, g: 0.9 * m_ + 0.1 * g, m, grads)  # fmt: skip
        v = jax.tree.map(lambda g: 0.001 * g**2, grads) if v is None else jax.tree.map(
            lambda v_, g: 0.999 * v_ + 0.001 * g**2, v, grads)  # fmt: skip
        lr = 1e-4 * step / warmup if step < warmup else 1e-4 * (1 - step / total)
        np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6)
        want = jax.tree.map(
            lambda p, m_, v_, d, lr=lr: p - lr * (m_ / (np.sqrt(v_) + 1e-6) + 0.01 * p * d),
            want, m, v, decayed,
        )  # fmt: skip
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-6, atol=1e-9)


def test_adam_b2_and_eps_config_fields_reach_the_optimizer():
    """One AdamW step without bias correction: -lr (1 - b1) g / (sqrt(1 - b2) |g| + eps)."""
    config = bert_mlm_ptb.get_config()
    config.adam_b2, config.adam_eps, config.weight_decay = 0.98, 1e-3, 0.0
    _, tx = optim.from_config(config, total_steps=1000, warmup_steps=0)
    params = {"kernel": np.zeros((2, 2), np.float32)}
    got = _apply(tx, params, [{"kernel": np.full((2, 2), 0.1, np.float32)}])["kernel"]
    want = -1e-3 * 0.1 * 0.1 / (np.sqrt(0.02) * 0.1 + 1e-3)
    np.testing.assert_allclose(got, np.full((2, 2), want), rtol=1e-5)
    # With bias correction (Adam's, the base default) the first step is -lr g / (|g| + eps).
    config.adam_bias_correction = True
    _, tx = optim.from_config(config, total_steps=1000, warmup_steps=0)
    got = _apply(tx, params, [{"kernel": np.full((2, 2), 0.1, np.float32)}])["kernel"]
    np.testing.assert_allclose(got, np.full((2, 2), -1e-3 * 0.1 / (0.1 + 1e-3)), rtol=1e-5)


def test_moco_v2_configs_use_the_reference_sgd():
    """facebookresearch/moco: torch.optim.SGD(model.parameters(), lr, momentum=0.9, wd=1e-4):
    plain momentum, weight decay on every parameter (BN and biases included)."""
    config = moco_v2_imagenet.get_config()
    assert (config.optimizer, config.nesterov, config.decay_all_params) == ("sgd", False, True)
    lr, wd = 0.03, 1e-4
    _, tx = optim.from_config(config, total_steps=10**6, warmup_steps=0)
    params = _toy_tree(0.5)
    steps = [_toy_tree(2.0), _toy_tree(-1.0)]
    got = _apply(tx, params, steps)
    want, buf = jax.tree.map(np.float64, params), None
    for grads in steps:  # torch: d = g + wd p; buf = m buf + d; p -= lr buf (lr ~ constant here)
        d = jax.tree.map(lambda g, p: g + wd * p, grads, want)
        buf = d if buf is None else jax.tree.map(lambda b, d_: 0.9 * b + d_, buf, d)
        want = jax.tree.map(lambda p, b: p - lr * b, want, buf)
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-6)

    # The previous behaviour stays one override away: Nesterov, no decay of biases and norms.
    config.nesterov, config.decay_all_params = True, False
    _, tx = optim.from_config(config, total_steps=10**6, warmup_steps=0)
    old = optax.chain(
        optax.add_decayed_weights(wd, mask=optim.decay_mask),
        optax.sgd(optim.make_schedule(lr, 10**6, 0), momentum=0.9, nesterov=True),
    )
    for got_leaf, want_leaf in zip(
        jax.tree.leaves(_apply(tx, params, steps)),
        jax.tree.leaves(_apply(old, params, steps)),
        strict=True,
    ):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-6)


def test_decay_all_params_still_spares_frozen_parameters():
    params = {"frozen_patch_embed": {"kernel": np.ones((2, 2))}, "bias": np.ones(2)}
    tx = optim.make_optimizer(
        "sgd", optax.constant_schedule(1.0), weight_decay=0.1, nesterov=False,
        decay_all_params=True,
    )  # fmt: skip
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["frozen_patch_embed"]["kernel"], 0.0)
    np.testing.assert_allclose(updates["bias"], -0.1, rtol=1e-6)
