"""Gradient caching against full-batch references with the same per-chunk BatchNorm grouping.

The reference applies the model to all chunks at once (``jax.vmap`` over [chunks, chunk, ...],
each chunk with its own BN statistics) and differentiates it plainly; grad caching must give the
same loss, gradients and BN statistics, on one device and on eight.
"""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_train_step import tiny_config

from ssl_jax import gradcache, losses
from ssl_jax.core import parallel
from ssl_jax.methods import simclr
from ssl_jax.vision import augment


class BatchNormMLP(nn.Module):
    width: int = 32

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Dense(self.width)(x)))
        return nn.Dense(8)(x)


def mlp_setup(batch, width, dim=6):
    model = BatchNormMLP(width)
    inputs = jax.random.normal(jax.random.PRNGKey(0), (batch, dim))
    variables = model.init(jax.random.PRNGKey(1), inputs[:4])
    # Non-trivial running statistics, so the combined update is checked for real.
    stats = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])

    def apply_chunk(params, chunk):
        out, updates = model.apply(
            {"params": params, "batch_stats": stats}, chunk, mutable=["batch_stats"]
        )
        return out, updates["batch_stats"]

    return variables["params"], inputs, apply_chunk


def contrastive(outputs):
    half = outputs.shape[0] // 2
    return losses.nt_xent(outputs[:half], outputs[half:], temperature=0.3)


def assert_trees_close(got, want, tolerance=1e-4):
    """Each leaf within ``tolerance`` of the largest entry of its reference leaf.

    Leaf-relative rather than entry-relative: BatchNorm over a few examples amplifies float32
    rounding, so entries near zero differ by more than 1e-4 of themselves between any two
    float32 evaluation orders (both paths are ~1e-5 from a float64 evaluation).
    """
    scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(want))
    for (path, got_leaf), want_leaf in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        # Leaves that are (nearly) zero in exact arithmetic, such as biases before BatchNorm,
        # hold mostly rounding, whose size follows the largest gradients.
        leaf_scale = max(float(np.abs(want_leaf).max()), 1e-2 * scale)
        error = float(np.abs(np.asarray(got_leaf) - np.asarray(want_leaf)).max())
        assert error <= tolerance * leaf_scale, (jax.tree_util.keystr(path), error, leaf_scale)


@pytest.mark.parametrize("chunk_size", [4, 8, 32])
def test_chunked_apply_equals_per_chunk_vmap_reference(chunk_size):
    params, inputs, apply_chunk = mlp_setup(batch=32, width=16)

    def cached(params):
        outputs, stats = gradcache.chunked_apply(apply_chunk, params, inputs, chunk_size=chunk_size)
        return contrastive(gradcache.merge_chunks(outputs)), stats

    def reference(params):
        chunks = inputs.reshape(-1, chunk_size, inputs.shape[1])
        outputs, stats = jax.vmap(apply_chunk, in_axes=(None, 0))(params, chunks)
        return contrastive(outputs.reshape(-1, outputs.shape[-1])), stats

    (loss, stats), grads = jax.jit(jax.value_and_grad(cached, has_aux=True))(params)
    (want_loss, want_stats), want_grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        params
    )
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert_trees_close(stats, want_stats)
    assert_trees_close(grads, want_grads)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3


def test_chunked_apply_rejects_a_chunk_size_that_does_not_divide_the_batch():
    with pytest.raises(ValueError, match="chunk_size=3 must divide the batch of 8"):
        gradcache.chunked_apply(lambda p, x: x * p, 1.0, jnp.ones((8, 2)), chunk_size=3)
    with pytest.raises(ValueError, match="positive integer"):
        gradcache.chunked_apply(lambda p, x: x * p, 1.0, jnp.ones((8, 2)), chunk_size=0)


def test_grad_cache_compiled_temp_memory_is_smaller():
    # 512 examples x 512 hidden units: each kept activation is 1 MiB; chunks of 64 keep 1/8.
    params, inputs, apply_chunk = mlp_setup(batch=512, width=512)

    def temp_bytes(chunk_size):
        def loss(params):
            outputs, _ = gradcache.chunked_apply(apply_chunk, params, inputs, chunk_size=chunk_size)
            outputs = gradcache.merge_chunks(outputs)
            return losses.nt_xent(outputs[:256], outputs[256:], temperature=0.3, chunk_size=64)

        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    # chunk_size = batch is one chunk: no caching, the full batch's activations are kept.
    full, cached = temp_bytes(512), temp_bytes(64)
    assert full > 8 * 2**20
    assert cached * 3 < full, (cached, full)


def simclr_loss_and_grads(method, params, batch_stats, batch, rng, axis_name):
    state = types.SimpleNamespace(batch_stats=batch_stats)
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    # Under shard_map the loss is global and JAX sums the replicated parameters' gradients.
    (loss, aux), grads = grad_fn(params, state, batch, rng, axis_name)
    return loss, grads, aux.mutated["batch_stats"]


@pytest.mark.slow
def test_sharded_simclr_grad_cache_equals_one_device_per_chunk_reference():
    # 64 images on 8 devices, chunks of 8: each device normalises 2 chunks (one per view).
    config = tiny_config()
    config.grad_cache_chunk_size = 8
    images = np.random.default_rng(0).integers(0, 256, (64, 12, 12, 1), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "label": jnp.zeros(64, jnp.int32)}
    rng = jax.random.PRNGKey(3)
    variables = simclr.make(config, 12, None).init(jax.random.PRNGKey(0), {"image": images[:2]})
    params = variables["params"]
    batch_stats = jax.tree.map(lambda x: x + 0.1, variables["batch_stats"])

    # Reference on one device: the same views, the whole batch through the model in one plainly
    # differentiated call with BatchNorm statistics per group of 8 consecutive views of one
    # kind (vmap), running statistics averaged over the groups.
    model = simclr.build_model(config, None)

    def reference(params):
        view1, view2 = augment.simclr_views(
            rng, batch["image"], example_ids=jnp.arange(64), **simclr.augment_kwargs(config, 12)
        )
        groups = jnp.concatenate([view1, view2]).reshape(16, 8, 12, 12, 1)

        def apply_group(group):
            (_, projections), updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                group,
                train=True,
                mutable=["batch_stats"],
            )
            return projections, updates["batch_stats"]

        projections, stats = jax.vmap(apply_group)(groups)
        projections = projections.reshape(128, -1)
        # SimCLR's reference reduction: loss_a + loss_b, twice the mean over the 2N anchors.
        loss = 2 * losses.nt_xent(
            projections[:64], projections[64:], temperature=config.temperature
        )
        return loss, jax.tree.map(lambda x: x.mean(0), stats)

    (want_loss, want_stats), want_grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        params
    )

    method = simclr.make(config, 12, parallel.DATA_AXIS)
    sharded = parallel.shard(
        lambda *args: simclr_loss_and_grads(method, *args, parallel.DATA_AXIS),
        parallel.make_mesh(),
        in_specs=(P(), P(), P("data"), P()),
        out_specs=(P(), P(), P()),
    )
    loss, grads, stats = sharded(params, batch_stats, batch, rng)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert_trees_close(grads, want_grads)
    assert_trees_close(stats, want_stats)
    assert np.abs(np.asarray(stats["encoder"]["stem_bn"]["var"]) - 1.1).max() > 1e-3


def test_simclr_validate_names_the_chunk_fields():
    config = tiny_config()
    config.grad_cache_chunk_size = 6
    with pytest.raises(ValueError, match="grad_cache_chunk_size=6"):
        simclr.validate(config, 32)
    config.grad_cache_chunk_size = None
    config.loss_chunk_size = -1
    with pytest.raises(ValueError, match="loss_chunk_size=-1"):
        simclr.validate(config, 32)
    config.loss_chunk_size = 0
    simclr.validate(config, 32)
