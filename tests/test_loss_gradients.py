"""Every loss's gradient is the gradient of its value, the way JAX users compose it.

For each loss, embeddings come from replicated parameters applied to a global batch split over
8 devices. The one-device loss on the global batch is the reference (itself checked against
NumPy in test_losses / test_mlm). Four compositions must give its value and gradient:
``jax.grad`` of a user's ``shard_map`` of ``pmean(loss)`` (the notebook idiom), the same
without the ``pmean``, ``jax.grad`` taken inside the ``shard_map``, and ``jax.pmap`` with the
pmap driver's reduction (``parallel.pmap_replicated_grads``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from ssl_jax import losses
from ssl_jax.core import parallel

AXIS = parallel.DATA_AXIS
DEVICES = 8


def _nt_xent(params, data, axis_name, chunk_size=None):
    z1, z2 = data["x1"] @ params["w"], data["x2"] @ params["w"]
    return losses.nt_xent(z1, z2, temperature=0.2, axis_name=axis_name, chunk_size=chunk_size)


def _info_nce_queue(params, data, axis_name):
    q, k = data["x1"] @ params["w"], data["x2"] @ params["w"]
    return losses.info_nce(q, k, params["queue"], temperature=0.2, axis_name=axis_name)


def _info_nce_batch(params, data, axis_name):
    q, k = data["x1"] @ params["w"], data["x2"] @ params["w"]
    return losses.info_nce(q, k, temperature=0.2, axis_name=axis_name)


def _mlm(params, data, axis_name):
    logits = data["hidden"] @ params["w_vocab"]
    loss, _ = losses.mlm_loss(logits, data["labels"], data["weights"], axis_name=axis_name)
    return loss


def _mean_over_devices(params, data, axis_name):
    local = jnp.mean(jnp.square(data["x1"] @ params["w"]))
    return losses.mean_over_devices(local, axis_name)


LOSSES = {
    "nt_xent": _nt_xent,
    "nt_xent_chunked": functools.partial(_nt_xent, chunk_size=3),
    "info_nce_queue": _info_nce_queue,
    "info_nce_batch_keys": _info_nce_batch,
    "mlm_loss": _mlm,
    "mean_over_devices": _mean_over_devices,
}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, d_in, d = 4 * DEVICES, 6, 5
    params = {
        "w": rng.normal(size=(d_in, d)).astype(np.float32),
        "queue": rng.normal(size=(16, d)).astype(np.float32),
        "w_vocab": rng.normal(size=(d_in, 11)).astype(np.float32),
    }
    weights = (rng.random((n, 3)) < 0.5).astype(np.float32)
    weights[:4] = 1.0  # unequal weight sums per device: the global denominator matters
    data = {
        "x1": rng.normal(size=(n, d_in)).astype(np.float32),
        "x2": rng.normal(size=(n, d_in)).astype(np.float32),
        "hidden": rng.normal(size=(n, 3, d_in)).astype(np.float32),
        "labels": rng.integers(0, 11, (n, 3)).astype(np.int32),
        "weights": weights,
    }
    return params, data


def _reference(loss_fn, params, data):
    return jax.jit(jax.value_and_grad(lambda p: loss_fn(p, data, None)))(params)


def _assert_close(got, want, what):
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-6,
            err_msg=f"{what} {jax.tree_util.keystr(path)}",
        )  # fmt: skip


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_grad_of_users_shard_map_equals_one_device(problem, name):
    loss_fn = LOSSES[name]
    params, data = problem
    want_value, want_grads = _reference(loss_fn, params, data)
    mesh = parallel.make_mesh()
    for wrap in ("pmean", "plain"):

        def per_device(p, d, wrap=wrap):
            value = loss_fn(p, d, AXIS)
            return lax.pmean(value, AXIS) if wrap == "pmean" else value

        mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())
        value, grads = jax.jit(jax.value_and_grad(mapped))(params, data)
        np.testing.assert_allclose(value, want_value, rtol=2e-6)
        _assert_close(grads, want_grads, f"{name}, grad outside shard_map ({wrap})")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_grad_inside_shard_map_equals_one_device(problem, name):
    loss_fn = LOSSES[name]
    params, data = problem
    want_value, want_grads = _reference(loss_fn, params, data)
    mapped = parallel.shard(
        jax.value_and_grad(lambda p, d: loss_fn(p, d, AXIS)),
        parallel.make_mesh(),
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P()),
    )
    value, grads = mapped(params, data)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    _assert_close(grads, want_grads, f"{name}, grad inside shard_map")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_pmap_with_driver_reduction_equals_one_device(problem, name):
    loss_fn = LOSSES[name]
    params, data = problem
    want_value, want_grads = _reference(loss_fn, params, data)

    def per_device(p, d):
        value, grads = jax.value_and_grad(lambda p: loss_fn(p, d, AXIS))(p)
        return value, parallel.pmap_replicated_grads(grads)

    split = jax.tree.map(lambda x: x.reshape(DEVICES, -1, *x.shape[1:]), data)
    values, grads = jax.pmap(per_device, axis_name=AXIS, in_axes=(None, 0))(params, split)
    np.testing.assert_allclose(values, np.full(DEVICES, want_value), rtol=2e-6)
    for device in range(DEVICES):
        _assert_close(jax.tree.map(lambda g, i=device: g[i], grads), want_grads, f"{name}, pmap")
