"""What the reference implementations do and ssl_jax once did not: heads, per-device validation,
MoCo v3's per-view BatchNorm and SimCLR's loss reduction."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (
    moco_v2_fashion_mnist,
    moco_v3_resnet50_imagenet,
    moco_v3_vit_small_imagenet,
    simclr_fashion_mnist,
)
from ssl_jax import losses, train
from ssl_jax.methods import moco, simclr
from ssl_jax.vision import augment


def _param_paths(tree):
    return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


def _simclr_params(config):
    method = simclr.make(config, image_size=28, bn_axis_name=None)
    images = np.zeros((4, 28, 28, 1), np.uint8)
    return jax.eval_shape(method.init, jax.random.key(0), {"image": images})


def test_simclr_head_follows_use_bn():
    config = simclr_fashion_mnist.get_config("runlocal")
    with_bn = _simclr_params(config)
    head = {p for p in _param_paths(with_bn["params"]) if p.startswith("['head']")}
    assert any("BatchNorm" in p for p in head)
    assert not any("bias" in p and "Dense" in p for p in head)
    config.head.use_bn = False
    without_bn = _simclr_params(config)
    head = {p for p in _param_paths(without_bn["params"]) if p.startswith("['head']")}
    assert not any("BatchNorm" in p for p in head), head
    assert any("Dense" in p and "bias" in p for p in head)
    assert "head" not in without_bn["batch_stats"]


def test_simclr_head_output_bn_keeps_its_scale_moco_v3_drops_it():
    head = _simclr_params(simclr_fashion_mnist.get_config("runlocal"))["params"]["head"]
    last_bn = sorted(name for name in head if name.startswith("BatchNorm"))[-1]
    assert set(head[last_bn]) == {"scale"}  # SimCLR's final BN: a scale, no offset

    config = moco_v3_vit_small_imagenet.get_config("runlocal")
    config.model.name, config.image_size = "vit_tiny", 16
    method = moco.make(config, image_size=16, bn_axis_name=None)
    images = np.zeros((4, 16, 16, 3), np.uint8)
    params = jax.eval_shape(method.init, jax.random.key(0), {"image": images})["params"]
    projector = params["head"]
    # Only the hidden layers' BatchNorms have parameters; the output one is affine-free.
    with_params = [name for name in projector if name.startswith("BatchNorm")]
    assert len(with_params) == config.head.num_layers - 1, sorted(projector)
    stats = jax.eval_shape(method.init, jax.random.key(0), {"image": images})["batch_stats"]
    assert len([n for n in stats["head"] if n.startswith("BatchNorm")]) == config.head.num_layers


@pytest.mark.parametrize(
    "make_config, field, value, message",
    [
        (simclr_fashion_mnist, "grad_cache_chunk_size", 16, "per-device batch of 8"),
        (moco_v2_fashion_mnist, "moco.bn_group_size", 3, "per-device batch of 8"),
    ],
)
def test_per_device_facts_are_config_errors_before_anything_is_written(
    tmp_path, make_config, field, value, message
):
    # Batch 64 on 8 devices: 8 per device. Both values divide the global batch of 64 or pass a
    # global check, and used to fail only while tracing or compiling.
    config = make_config.get_config("runlocal")
    config.batch_size = 64
    if field.startswith("moco."):
        config.moco.queue_size = 128
        config.moco[field.split(".")[1]] = value
    else:
        config[field] = value
    with pytest.raises(train.ConfigError, match=message):
        train.validate_config(config, device_count=8)
    workdir = tmp_path / "run"
    with pytest.raises(train.ConfigError, match=message):
        train.run(config, str(workdir))
    assert not workdir.exists() or not os.listdir(workdir)


def test_valid_per_device_settings_pass():
    config = simclr_fashion_mnist.get_config("runlocal")
    config.batch_size, config.grad_cache_chunk_size = 64, 4
    train.validate_config(config, device_count=8)
    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.batch_size, config.moco.queue_size, config.moco.bn_group_size = 64, 128, 4
    train.validate_config(config, device_count=8)


def _moco_v3(joint):
    # A ResNet: BatchNorm in the encoder as well as the heads, and cheap to compile.
    config = moco_v3_resnet50_imagenet.get_config("runlocal")
    config.image_size = 16
    config.dtype = "float32"  # the ImageNet config computes in bfloat16
    config.moco.bn = "sync"
    config.moco.joint_view_bn = joint
    return config, moco.make(config, image_size=16, bn_axis_name=None, total_steps=10)


def test_moco_v3_normalises_each_view_on_its_own_like_the_reference():
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images)}
    config, method = _moco_v3(joint=False)
    variables = jax.jit(method.init)(jax.random.key(0), batch)
    state = train.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables["batch_stats"], opt_state=None, rng=jax.random.key(1),
        extra=variables["extra"],
    )  # fmt: skip
    rng = jax.random.key(2)
    loss, aux = jax.jit(lambda p, s, b, r: method.loss(p, s, b, r, None))(
        variables["params"], state, batch, rng
    )

    # moco-v3's forward: q1 = predictor(base(x1)), q2 = ..., k1 = momentum(x1), k2 = ...,
    # each call a BatchNorm batch of its own; loss = 2 tau (ctr(q1, k2) + ctr(q2, k1)).
    aug_rng, _ = jax.random.split(rng)
    view1, view2 = augment.simclr_views(
        aug_rng, batch["image"], example_ids=jnp.arange(8), **simclr.augment_kwargs(config, 16)
    )
    query_model = method.loss.keywords["query_model"]

    def forward(params, stats, view, predict):
        (_, out), updates = query_model.apply(
            {"params": params, "batch_stats": stats}, view, train=True,
            mutable=["batch_stats"], predict=predict,
        )  # fmt: skip
        return out, updates["batch_stats"]

    forward = jax.jit(forward, static_argnums=3)
    q1, stats = forward(variables["params"], variables["batch_stats"], view1, True)
    q2, stats = forward(variables["params"], stats, view2, True)
    key_params, key_stats = variables["extra"]["key_params"], variables["extra"]["key_batch_stats"]
    k1, key_stats = forward(key_params, key_stats, view1, False)
    k2, key_stats = forward(key_params, key_stats, view2, False)
    tau = config.temperature
    want = (
        2
        * tau
        * (losses.info_nce(q1, k2, temperature=tau) + losses.info_nce(q2, k1, temperature=tau))
    )
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    for got, expected in zip(
        jax.tree.leaves(aux.mutated["batch_stats"]), jax.tree.leaves(stats), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # The joint form (both views in one BN batch) is a different loss: the test can tell.
    _, joint = _moco_v3(joint=True)
    joint_loss, _ = jax.jit(lambda p, s, b, r: joint.loss(p, s, b, r, None))(
        variables["params"], state, batch, rng
    )
    assert abs(float(joint_loss) - float(want)) > 1e-4


def test_simclr_loss_is_the_reference_sum_over_views_by_default():
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    batch = {"image": jnp.asarray(images)}
    values = {}
    for reduction in ("sum_over_views", "mean"):
        config = simclr_fashion_mnist.get_config("runlocal")
        config.nt_xent_reduction = reduction
        method = simclr.make(config, image_size=28, bn_axis_name=None)
        variables = jax.jit(method.init)(jax.random.key(0), batch)
        state = train.TrainState(
            step=jnp.zeros((), jnp.int32), params=variables["params"],
            batch_stats=variables["batch_stats"], opt_state=None, rng=jax.random.key(1),
        )  # fmt: skip
        loss, _ = jax.jit(lambda p, s, b, r, m=method: m.loss(p, s, b, r, None))(
            variables["params"], state, batch, jax.random.key(2)
        )
        values[reduction] = float(loss)
    # loss_a + loss_b of the reference is twice the mean over all 2N anchors.
    np.testing.assert_allclose(values["sum_over_views"], 2 * values["mean"], rtol=1e-6)
    assert simclr_fashion_mnist.get_config().nt_xent_reduction == "sum_over_views"


def test_moco_v3_resnet_predictor_ends_without_bn_or_bias_like_the_reference():
    config = moco_v3_resnet50_imagenet.get_config("runlocal")
    config.image_size = 16
    method = moco.make(config, image_size=16, bn_axis_name=None, total_steps=10)
    images = np.zeros((4, 16, 16, 3), np.uint8)
    variables = jax.eval_shape(method.init, jax.random.key(0), {"image": images})
    predictor = variables["params"]["predictor"]
    # _build_mlp(2, dim, mlp_dim, dim, last_bn=False): Linear-BN-ReLU-Linear, no biases.
    assert sorted(predictor) == ["BatchNorm_0", "Dense_0", "Dense_1"], sorted(predictor)
    assert set(predictor["Dense_1"]) == {"kernel"}
    assert len(variables["batch_stats"]["predictor"]) == 1
    # The projector keeps an affine-free BN on its output: statistics without parameters.
    assert len(variables["batch_stats"]["head"]) == config.head.num_layers
    assert len([n for n in variables["params"]["head"] if "BatchNorm" in n]) == (
        config.head.num_layers - 1
    )
    assert dict(config.augment.second_view) == {"blur_prob": 0.1, "solarize_prob": 0.2}
    assert config.augment.blur_prob == 1.0
