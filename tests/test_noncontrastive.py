"""BYOL, SimSiam, Barlow Twins and VICReg: losses against NumPy, on 1 and 8 devices, and methods.

The NumPy references are the papers' formulas written out in float64; gradients are checked
against their central differences, and the 8-device values and gradients against 1 device.
"""

import importlib

import jax
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P
from resume import assert_bitwise_equal, assert_states_close
from test_loss_gradients import _assert_close

from ssl_jax import losses, train
from ssl_jax.core import checkpoint, optim, parallel
from ssl_jax.methods import METHODS
from ssl_jax.methods.moco import momentum_at

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


def tiny_config(method):
    config = importlib.import_module(f"configs.{method}_fashion_mnist").get_config("runlocal")
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    if "predictor" in config:  # BYOL and SimSiam
        config.predictor.hidden_dim = 16
    return config


def make_step(config, devices, images, total_steps=4):
    mesh = parallel.make_mesh(devices)
    method = METHODS[config.method].make(
        config, images.shape[1], parallel.DATA_AXIS, total_steps=total_steps
    )
    _, tx = optim.from_config(config, total_steps, warmup_steps=0)
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    batch = parallel.to_global({"image": images, "label": np.zeros(len(images), np.int32)}, mesh)
    return train.make_train_step(method, tx, mesh), state, batch


def run_steps(config, devices, images, count, *, total_steps=4, checkpoint_dir=None):
    """``count`` steps from init: (host states, step 0 first; metrics; resumed). With
    ``checkpoint_dir`` step 1's state is saved there and ``resumed`` is step 2 taken again from
    the restored checkpoint."""
    step_fn, state, batch = make_step(config, jax.devices()[:devices], images, total_steps)
    states, metrics, resumed = [jax.device_get(state)], [], None
    for step in range(count):
        if checkpoint_dir and step == 1:
            abstract = checkpoint.abstract_like(state)
            saver = checkpoint.Checkpointer(checkpoint_dir)
            saver.save(1, state)
            saver.close()
        state, step_metrics = step_fn(state, batch)
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(step_metrics))
    if checkpoint_dir:
        restored = checkpoint.Checkpointer(checkpoint_dir).restore(abstract, 1)
        resumed = jax.device_get(step_fn(restored, batch)[0])
    return states, metrics, resumed


IMAGES = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def byol_runs(tmp_path_factory):
    """Two BYOL steps on 1 and on 8 devices; on 1, step 2 again from a checkpoint of step 1."""
    config = tiny_config("byol")
    config.byol.momentum = 0.9  # far from 1, so the schedule's steps are far apart
    runs = {}
    for devices in (1, DEVICES):
        step_fn, state, batch = make_step(config, jax.devices()[:devices], IMAGES)
        states, metrics = [jax.device_get(state)], []
        for step in range(2):
            if devices == 1 and step == 1:
                abstract = checkpoint.abstract_like(state)
                saver = checkpoint.Checkpointer(str(tmp_path_factory.mktemp("byol")))
                saver.save(1, state)
                saver.close()
            state, step_metrics = step_fn(state, batch)
            states.append(jax.device_get(state))
            metrics.append(jax.device_get(step_metrics))
        runs[devices] = states, metrics
        if devices == 1:
            restored = checkpoint.Checkpointer(saver.workdir).restore(abstract, 1)
            runs["resumed"] = jax.device_get(step_fn(restored, batch)[0])
    return runs


def test_byol_target_moves_once_per_step_by_the_cosine_momentum(byol_runs):
    states, _ = byol_runs[1]
    for k in (1, 2):  # the k-th optimiser step uses the schedule's value at k - 1 (from 0)
        momentum = float(momentum_at(k - 1, base=0.9, total_steps=4, cosine=True))
        want = jax.tree.map(
            lambda t, o, m=momentum: m * t + (1 - m) * o,
            states[k - 1].extra["target_params"], states[k].params,
        )  # fmt: skip
        _assert_close(states[k].extra["target_params"], want, f"target after step {k}")
    moved = jax.tree.map(
        lambda t, o: np.abs(t - o).max(), states[2].extra["target_params"], states[2].params
    )
    assert max(jax.tree.leaves(moved)) > 1e-3  # the target is not a copy of the online net


def test_byol_step_restored_from_a_checkpoint_is_bitwise_identical(byol_runs):
    """Target parameters, their BN statistics and the step (the momentum's schedule) restored."""
    straight = byol_runs[1][0][2]
    assert_bitwise_equal(byol_runs["resumed"], straight)


def test_byol_steps_on_eight_devices_equal_one_device(byol_runs):
    (sharded, sharded_metrics), (single, single_metrics) = byol_runs[DEVICES], byol_runs[1]
    for got, want in zip(sharded_metrics, single_metrics, strict=True):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    # Tolerance: float32 sums in another order, through BN over 2 examples a device and two
    # steps of LARS; per-device statistics or a gradient off by the device count miss by > 1e-2.
    assert_states_close(sharded[-1], single[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["simsiam", "barlow_twins", "vicreg"])
def test_runlocal_config_traces_a_step_on_eight_devices(method):
    """Shapes, collectives and replication types of the whole step (compiled: the full runs)."""
    step_fn, state, batch = make_step(tiny_config(method), jax.devices(), IMAGES)
    new_state, metrics = jax.eval_shape(step_fn, state, batch)
    assert metrics["loss"].shape == () and jax.tree.structure(new_state) == jax.tree.structure(
        state
    )


def test_simsiam_predictor_keeps_the_peak_learning_rate():
    config = tiny_config("simsiam")
    config.weight_decay = 0.0
    config.momentum = 0.0
    _, tx = optim.from_config(config, total_steps=10, warmup_steps=2)
    params = {"encoder": {"kernel": np.ones(3, np.float32)}, "predictor": {"kernel": np.ones(3)}}
    grads = jax.tree.map(np.ones_like, params)
    opt_state = tx.init(params)
    peak = optim.peak_learning_rate(config.learning_rate, config.batch_size, config.lr_scaling)
    schedule = optim.make_schedule(peak, 10, 2, config.schedule)
    for step in range(6):
        updates, opt_state = tx.update(grads, opt_state, params)
        np.testing.assert_allclose(updates["predictor"]["kernel"], -peak, rtol=1e-6)
        np.testing.assert_allclose(updates["encoder"]["kernel"], -schedule(step), rtol=1e-6)


def test_fixed_lr_modules_naming_no_parameter_group_is_refused():
    config = tiny_config("simsiam")
    config.fixed_lr_modules = ("predicter",)
    _, tx = optim.from_config(config, total_steps=10, warmup_steps=0)
    with pytest.raises(ValueError, match=r"fixed_lr_modules names \['predicter'\].*'predictor'"):
        tx.init({"encoder": np.ones(2), "predictor": np.ones(2)})
