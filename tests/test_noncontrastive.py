"""BYOL, SimSiam, Barlow Twins and VICReg: losses against NumPy, on 1 and 8 devices, and methods.

The NumPy references are the papers' formulas written out in float64; gradients are checked
against their central differences, and the 8-device values and gradients against 1 device.
"""

import jax
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P
from test_loss_gradients import _assert_close

from ssl_jax import losses, parallel

AXIS = parallel.DATA_AXIS
DEVICES = 8


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_byol(p, z):
    return np.mean(np.sum((_unit(p) - _unit(z)) ** 2, axis=1))


def np_simsiam(p, z):
    return -np.mean([np.dot(a, b) for a, b in zip(_unit(p), _unit(z), strict=True)])


def np_barlow_twins(z1, z2, lam=0.0051, eps=1e-5):
    n1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
    n2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    c = np.einsum("ni,nj->ij", n1, n2) / z1.shape[0]
    off = ~np.eye(c.shape[0], dtype=bool)
    return np.sum((1 - np.diag(c)) ** 2) + lam * np.sum(c[off] ** 2)


def np_vicreg(x, y, sim=25.0, std=25.0, cov=1.0, eps=1e-4):
    d = x.shape[1]
    off = ~np.eye(d, dtype=bool)
    variance = sum(np.mean(np.maximum(0, 1 - np.sqrt(v.var(0, ddof=1) + eps))) for v in (x, y))
    covariance = sum(np.sum(np.cov(v, rowvar=False)[off] ** 2) / d for v in (x, y))
    return sim * np.mean((x - y) ** 2) + std * variance / 2 + cov * covariance


LOSSES = {
    "byol": (losses.byol_loss, np_byol),
    "simsiam": (losses.simsiam_loss, np_simsiam),
    "barlow_twins": (losses.barlow_twins_loss, np_barlow_twins),
    "vicreg": (losses.vicreg_loss, np_vicreg),
}


def _numeric_grad(f, a, b, h=1e-6):
    grads = []
    for which in range(2):
        args = [a.copy(), b.copy()]
        grad = np.zeros_like(args[which])
        for index in np.ndindex(grad.shape):
            up, down = [x.copy() for x in args], [x.copy() for x in args]
            up[which][index] += h
            down[which][index] -= h
            grad[index] = (f(*up) - f(*down)) / (2 * h)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_value_and_gradient_match_numpy(name):
    loss_fn, reference = LOSSES[name]
    rng = np.random.default_rng(1)
    # Scale 0.6: some VICReg dimensions below unit std (the hinge active), some above.
    a = rng.normal(scale=0.6, size=(12, 4)) + 0.3
    b = a + rng.normal(scale=0.4, size=a.shape)
    value, grads = jax.value_and_grad(lambda x, y: loss_fn(x, y), argnums=(0, 1))(
        a.astype(np.float32), b.astype(np.float32)
    )
    np.testing.assert_allclose(value, reference(a, b), rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, _numeric_grad(reference, a, b), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, d_in, d = 4 * DEVICES, 6, 5
    params = {"w": rng.normal(scale=0.5, size=(d_in, d)).astype(np.float32)}
    x1 = rng.normal(size=(n, d_in)).astype(np.float32)
    x1[:4] += 3.0  # one device's rows differ: per-device statistics would differ from global ones
    data = {"x1": x1, "x2": (x1 + rng.normal(scale=0.5, size=x1.shape)).astype(np.float32)}
    return params, data


def _embedded(name):
    loss_fn = LOSSES[name][0]

    def loss(params, data, axis_name):
        return loss_fn(data["x1"] @ params["w"], data["x2"] @ params["w"], axis_name=axis_name)

    return loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_eight_devices_equal_one_device_value_and_gradient(problem, name):
    """jax.grad of a user's shard_map (with and without pmean), grad inside, and pmap."""
    loss_fn = _embedded(name)
    params, data = problem
    want_value, want_grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, data, None)))(params)
    mesh = parallel.make_mesh()
    results = {}
    for wrap in ("pmean", "plain"):

        def per_device(p, d, wrap=wrap):
            value = loss_fn(p, d, AXIS)
            return lax.pmean(value, AXIS) if wrap == "pmean" else value

        mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())
        results[f"grad outside ({wrap})"] = jax.jit(jax.value_and_grad(mapped))(params, data)
    inside = parallel.shard(
        jax.value_and_grad(lambda p, d: loss_fn(p, d, AXIS)),
        mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()),
    )  # fmt: skip
    results["grad inside"] = inside(params, data)

    def pmapped(p, d):
        value, grads = jax.value_and_grad(lambda p: loss_fn(p, d, AXIS))(p)
        return value, parallel.pmap_replicated_grads(grads)

    split = jax.tree.map(lambda x: x.reshape(DEVICES, -1, *x.shape[1:]), data)
    values, grads = jax.pmap(pmapped, axis_name=AXIS, in_axes=(None, 0))(params, split)
    results["pmap"] = (values[3], jax.tree.map(lambda g: g[3], grads))
    for what, (value, grads) in results.items():
        np.testing.assert_allclose(value, want_value, rtol=2e-6, err_msg=f"{name} {what}")
        _assert_close(grads, want_grads, f"{name}, {what}")
