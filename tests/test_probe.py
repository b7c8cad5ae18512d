"""The online linear probe: exact softmax-regression steps, sharded or not, and no effect on the
encoder's training."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import moco_v2_fashion_mnist, simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.core.probe import OnlineProbe
from ssl_jax.methods import METHODS

LEARNING_RATE = 0.5


def numpy_probe_step(kernel, bias, features, labels):
    """Plain SGD on the mean softmax cross entropy over the labelled rows."""
    valid = labels >= 0
    f, y = features[valid].astype(np.float64), labels[valid]
    logits = f @ kernel + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    delta = probs.copy()
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    accuracy = np.mean(logits.argmax(1) == y)
    return kernel - LEARNING_RATE * f.T @ delta, bias - LEARNING_RATE * delta.sum(0), loss, accuracy


@pytest.fixture
def probe_batch():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(16, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 16).astype(np.int32)
    labels[[1, 6, 11]] = -1  # unlabelled rows on several devices
    probe = OnlineProbe(num_classes=4, tx=optax.sgd(LEARNING_RATE))
    state = probe.init(6)
    # A non-zero start, so the step's value depends on the kernel and bias.
    state["params"] = {
        "kernel": rng.normal(size=(6, 4)).astype(np.float32) * 0.3,
        "bias": rng.normal(size=4).astype(np.float32) * 0.3,
    }
    return probe, state, features, labels


def check_against_numpy(new_state, metrics, state, features, labels):
    kernel, bias, loss, accuracy = numpy_probe_step(
        state["params"]["kernel"], state["params"]["bias"], features, labels
    )
    np.testing.assert_allclose(new_state["params"]["kernel"], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["params"]["bias"], bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["probe_loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["probe_top1"], accuracy, rtol=1e-6)


def test_probe_step_equals_numpy_softmax_regression(probe_batch):
    probe, state, features, labels = probe_batch
    new_state, metrics = jax.jit(probe.update)(state, features, labels)
    check_against_numpy(new_state, metrics, state, features, labels)


def test_sharded_probe_step_equals_one_device(probe_batch):
    probe, state, features, labels = probe_batch
    mesh = parallel.make_mesh()
    assert mesh.size == 8

    def body(state, features, labels):
        return probe.update(state, features, labels, parallel.DATA_AXIS)

    step = parallel.shard(
        body, mesh, in_specs=(P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
        out_specs=(P(), P()),
    )  # fmt: skip
    new_state, metrics = step(state, features, labels)
    check_against_numpy(new_state, metrics, state, features, labels)


CONFIGS = {"simclr": simclr_fashion_mnist, "moco": moco_v2_fashion_mnist}


@pytest.mark.parametrize("method_name", sorted(CONFIGS))
def test_probe_leaves_the_encoder_step_unchanged(method_name):
    config = CONFIGS[method_name].get_config("runlocal")
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    if "moco" in config:
        config.moco.queue_size = 32
        config.moco.bn_group_size = 4
    # One device keeps the compile cheap; the sharded probe step is checked above.
    mesh = parallel.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.integers(0, 256, (16, 12, 12, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    method = METHODS[method_name].make(config, 12, parallel.DATA_AXIS, total_steps=4)
    tx = optim.make_optimizer("lars", optax.constant_schedule(0.5), weight_decay=1e-4)
    probe = OnlineProbe(num_classes=10, tx=optax.adam(1e-2))

    def one_step(with_probe):
        state = train.create_state(method, tx, 0, batch, mesh, probe if with_probe else None)
        step = train.make_train_step(method, tx, mesh, probe=probe if with_probe else None)
        state, metrics = step(state, parallel.to_global(batch, mesh))
        return jax.device_get(state), jax.device_get(metrics)

    plain, plain_metrics = one_step(False)
    probed, probed_metrics = one_step(True)
    assert "probe_top1" in probed_metrics and "probe_top1" not in plain_metrics
    # The probe really trained ...
    assert np.abs(probed.probe["params"]["kernel"]).max() > 1e-3
    # ... and the encoder, its statistics and optimiser state are bit for bit the same.
    for name in ("params", "batch_stats", "opt_state", "extra"):
        for got, want in zip(
            jax.tree.leaves(getattr(probed, name)), jax.tree.leaves(getattr(plain, name)),
            strict=True,
        ):  # fmt: skip
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert probed_metrics["grad_norm"] == plain_metrics["grad_norm"]
    assert probed_metrics["loss"] == plain_metrics["loss"]
