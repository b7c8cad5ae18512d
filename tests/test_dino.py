"""DINO: the loss and center against NumPy (values, gradients, 1 and 8 devices), multi-crop views,
the teacher's EMA, the center, the temperature warm-up, the frozen last layer, and resume.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from resume import assert_bitwise_equal, assert_states_close
from test_loss_gradients import _assert_close
from test_noncontrastive import DEVICES, run_steps

from configs import dino_fashion_mnist
from ssl_jax import config_checks, losses
from ssl_jax.core import optim, parallel
from ssl_jax.methods.dino import teacher_temperature
from ssl_jax.methods.moco import momentum_at

AXIS = parallel.DATA_AXIS


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_dino(student, teacher, center, student_temp, teacher_temp):
    """DINOLoss.forward in float64: every (teacher view, other student view) pair, averaged."""
    targets = [np.exp(_log_softmax((t - center) / teacher_temp)) for t in teacher]
    terms = [
        np.mean(np.sum(-q * _log_softmax(s / student_temp), axis=-1))
        for iq, q in enumerate(targets)
        for v, s in enumerate(student)
        if v != iq
    ]
    return np.mean(terms)


def _problem(n=6, k=5, views=4, seed=0):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(views, n, k))
    teacher = rng.normal(size=(2, n, k))
    center = rng.normal(scale=0.3, size=k)
    return student, teacher, center


def test_loss_value_and_student_gradient_match_numpy():
    student, teacher, center = _problem()

    def loss(s):
        return losses.dino_loss(list(s), list(teacher), center, student_temp=0.1, teacher_temp=0.07)

    value, grad = jax.value_and_grad(loss)(student.astype(np.float32))
    np.testing.assert_allclose(value, np_dino(student, teacher, center, 0.1, 0.07), rtol=1e-5)
    numeric = np.zeros_like(student)
    for index in np.ndindex(student.shape):
        up, down = student.copy(), student.copy()
        up[index] += 1e-5
        down[index] -= 1e-5
        numeric[index] = (
            np_dino(up, teacher, center, 0.1, 0.07) - np_dino(down, teacher, center, 0.1, 0.07)
        ) / 2e-5
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=1e-5)
    teacher_grad = jax.grad(
        lambda t: losses.dino_loss(list(student), list(t), center, teacher_temp=0.07)
    )(teacher.astype(np.float32))
    assert not np.any(teacher_grad)  # the teacher is a target, under stop_gradient


def test_center_matches_numpy():
    _, teacher, center = _problem()
    got = losses.dino_center(list(teacher), center, momentum=0.9)
    want = 0.9 * center + 0.1 * np.concatenate(list(teacher)).mean(0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_eight_devices_equal_one_device_loss_gradient_and_center():
    rng = np.random.default_rng(3)
    n, d, k = 2 * DEVICES, 4, 6
    params = {"w": rng.normal(size=(d, k)).astype(np.float32)}
    data = {"x": rng.normal(size=(4, n, d)).astype(np.float32)}
    data["x"][:, :2] += 3.0  # one device's rows differ: a per-device center would differ
    teacher_w = rng.normal(size=(d, k)).astype(np.float32)
    center = rng.normal(size=k).astype(np.float32)

    def loss_and_center(p, batch, axis_name):
        student = [x @ p["w"] for x in batch["x"]]
        teacher = [x @ teacher_w for x in batch["x"][:2]]
        value = losses.dino_loss(student, teacher, center, teacher_temp=0.05, axis_name=axis_name)
        return value, losses.dino_center(teacher, center, axis_name=axis_name)

    (want, want_center), want_grad = jax.value_and_grad(
        lambda p: loss_and_center(p, data, None), has_aux=True
    )(params)
    mesh = parallel.make_mesh()
    specs = {"x": P(None, AXIS)}
    mapped = jax.shard_map(
        lambda p, b: loss_and_center(p, b, AXIS), mesh=mesh, in_specs=(P(), specs),
        out_specs=(P(), P()),
    )  # fmt: skip
    (value, got_center), grad = jax.jit(jax.value_and_grad(mapped, has_aux=True))(params, data)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    np.testing.assert_allclose(got_center, want_center, rtol=1e-5)
    _assert_close(grad, want_grad, "shard_map")


def test_teacher_temperature_warms_up_linearly():
    temps = [
        float(teacher_temperature(s, start=0.04, end=0.07, warmup_steps=10)) for s in (0, 5, 10, 30)
    ]
    np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)


IMAGES = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)


def _config():
    config = dino_fashion_mnist.get_config("runlocal")
    config.dino.local_crop_size = 8
    config.dino.freeze_last_layer_fraction = 0.5  # 2 of 4 steps
    config.dino.teacher_temp_warmup_fraction = 0.5
    config.dino.momentum = 0.9
    return config


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    return run_steps(_config(), 1, IMAGES, 3, checkpoint_dir=str(tmp_path_factory.mktemp("dino")))


def _direction(state):
    w = np.asarray(state.params["head"]["last_layer"])
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def test_last_layer_is_frozen_for_its_fraction_of_the_run(dino_run):
    states, _, _ = dino_run
    # AdamW's decay scales the raw weights; the normalised layer, what the head uses, stays.
    np.testing.assert_allclose(_direction(states[2]), _direction(states[0]), atol=1e-6)
    # Unfrozen, one AdamW step at this run's rate (6e-5 x the schedule) moves it by ~3e-5.
    assert np.abs(_direction(states[3]) - _direction(states[2])).max() > 1e-5
    moved = np.abs(
        states[1].params["head"]["Dense_0"]["kernel"]
        - states[0].params["head"]["Dense_0"]["kernel"]
    )
    assert moved.max() > 1e-5  # the rest of the head trains meanwhile


def test_teacher_follows_the_ema_and_the_temperature_its_warmup(dino_run):
    states, metrics, _ = dino_run
    for k in (1, 2, 3):
        m = float(momentum_at(k - 1, base=0.9, total_steps=4, cosine=True))
        want = jax.tree.map(
            lambda t, o, m=m: m * t + (1 - m) * o,
            states[k - 1].extra["teacher_params"], states[k].params,
        )  # fmt: skip
        _assert_close(states[k].extra["teacher_params"], want, f"teacher after step {k}")
    got = [float(m["teacher_temp"]) for m in metrics]
    np.testing.assert_allclose(got, [0.04, 0.055, 0.07], rtol=1e-5)
    assert np.abs(states[1].extra["center"]).max() > 0  # the center moved off zero


def test_step_restored_from_a_checkpoint_is_bitwise_identical(dino_run):
    """Teacher, center, and the step's schedules (freeze, temperature, momentum) restored."""
    states, _, resumed = dino_run
    assert_bitwise_equal(resumed, states[2])


@pytest.mark.parametrize("encoder", ["vit_tiny", "resnet10"])
def test_steps_on_eight_devices_equal_one_device(encoder):
    """SGD: AdamW would turn float noise in exactly-zero gradients into full steps. The ResNet
    has BatchNorm over the global batch in student and teacher (their statistics in extra)."""
    config = _config()
    if encoder == "resnet10":
        config.model.name, config.model.width_multiplier, config.model.stem = (
            "resnet10",
            0.0625,
            "small",
        )
    config.optimizer, config.learning_rate, config.weight_decay = "sgd", 0.5, 0.0
    config.weight_decay_end = None
    sharded, sharded_metrics, _ = run_steps(config, DEVICES, IMAGES, 2)
    single, single_metrics, _ = run_steps(config, 1, IMAGES, 2)
    if encoder == "resnet10":
        assert jax.tree.leaves(single[-1].extra["teacher_batch_stats"])
    for got, want in zip(sharded_metrics, single_metrics, strict=True):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    assert_states_close(sharded[-1], single[-1], rtol=1e-4, atol=1e-6)


def test_weight_decay_follows_its_cosine_schedule():
    config = dino_fashion_mnist.get_config("runlocal")
    config.optimizer, config.momentum, config.nesterov = "sgd", 0.0, False
    config.weight_decay, config.weight_decay_end = 0.04, 0.4
    config.learning_rate, config.lr_scaling, config.schedule = 1.0, "none", "cosine"
    schedule, tx = optim.from_config(config, total_steps=10, warmup_steps=0)
    params = {"kernel": np.ones(2, np.float32)}
    state = tx.init(params)
    zeros = {"kernel": np.zeros(2, np.float32)}
    decays = []
    for step in range(11):
        updates, state = tx.update(zeros, state, params)
        lr = float(schedule(step))
        if lr > 1e-6:
            decays.append((-float(updates["kernel"][0]) / lr, step))
    for got, step in decays:
        want = 0.4 + (0.04 - 0.4) * (1 + np.cos(np.pi * step / 10)) / 2
        np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=f"step {step}")


def test_a_weight_decay_schedule_with_lars_is_refused_in_one_line():
    config = dino_fashion_mnist.get_config("runlocal")
    config.optimizer = "lars"
    problem = config_checks.problem(config)
    assert problem and "weight_decay_end=0.4 needs optimizer 'adamw' or 'sgd'" in problem


def test_local_crops_that_cut_patches_are_refused():
    from ssl_jax.methods import dino

    config = dino_fashion_mnist.get_config("runlocal")
    config.dino.local_crop_size = 10
    with pytest.raises(
        ValueError, match=r"dino.local_crop_size=10 must divide by model.patch_size=4"
    ):
        dino.validate(config, 32)
