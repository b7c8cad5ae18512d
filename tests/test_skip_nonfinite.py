"""--config.skip_nonfinite_steps: a step with a non-finite gradient changes nothing and is counted.

More of them in a row than allowed let the NaN through, so the trainer's finite check stops the run.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from resume import assert_bitwise_equal
from test_data import needs_fashion_mnist

from configs import moco_v2_fashion_mnist, simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint, loop, optim, parallel
from ssl_jax.core.method import Method
from ssl_jax.core.state import TrainState
from ssl_jax.methods import METHODS


def regression_loss(params, state, batch, rng, axis_name):
    del state, rng, axis_name
    loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
    return loss, ({"batch_stats": {}}, {"loss": loss})


METHOD = Method(name="regression", init=None, loss=regression_loss, encode=None)


def make_tx(skips):
    config = ml_collections.ConfigDict(
        dict(
            learning_rate=0.1, batch_size=256, lr_scaling="none", schedule="cosine",
            optimizer="adamw", weight_decay=0.0, momentum=0.9,
        )
    )  # fmt: skip
    del skips  # the train step wraps the optimiser itself
    return optim.from_config(config, total_steps=10, warmup_steps=0)[1]


def batches(nan_at=()):
    rng = np.random.default_rng(0)
    for step in range(6):
        x = rng.normal(size=(8, 3)).astype(np.float32)
        if step in nan_at:
            x[2, 1] = np.nan
        yield {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], np.float32)}


def run(tx, skips, data):
    params = {"w": jnp.zeros(3)}
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
        opt_state=(train.guarded_optimizer(tx, skips) if skips else tx).init(params),
        rng=jax.random.PRNGKey(0),
    )  # fmt: skip
    step = jax.jit(
        functools.partial(
            train.train_step, method=METHOD, tx=tx, axis_name=None, skip_nonfinite=skips
        )
    )
    history = []
    for batch in data:
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def test_skipped_steps_change_nothing_and_are_counted():
    state, history = run(make_tx(2), 2, batches(nan_at=(1, 3, 4)))
    # The reference never sees the bad batches: a plain optimiser on the good ones only.
    good = [b for i, b in enumerate(batches(nan_at=(1, 3, 4))) if i not in (1, 3, 4)]
    want, _ = run(make_tx(0), 0, good)
    np.testing.assert_allclose(state.params["w"], want.params["w"], rtol=1e-6)
    assert int(state.step) == 6
    assert [m["step_skipped"] for m in history] == [0, 1, 0, 1, 1, 0]
    assert [m["skipped_steps"] for m in history] == [0, 1, 1, 2, 3, 3]
    assert all(np.isfinite(m["loss"]) for i, m in enumerate(history) if i not in (1, 3, 4))
    # The trainer's check accepts a skipped step's NaN loss ...
    loop.check_finite(history[1], step=2)
    # ... and refuses a NaN that was not skipped.
    with pytest.raises(FloatingPointError, match="step 7"):
        loop.check_finite({"loss": float("nan"), "step_skipped": 0.0}, step=7)


def test_any_optimiser_a_notebook_passes_is_guarded_on_the_mesh():
    # A chain whose outermost transformation is not apply_if_finite: the step wraps it itself.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    method = dataclasses.replace(METHOD, init=lambda rng, batch: {"params": {"w": jnp.zeros(3)}})
    mesh = parallel.make_mesh()
    data = list(batches(nan_at=(1,)))
    state = train.create_state(method, tx, 0, data[0], mesh, skip_nonfinite=2)
    step = train.make_train_step(method, tx, mesh, skip_nonfinite=2)
    skipped = []
    for batch in data[:3]:
        before = np.asarray(state.params["w"])
        state, metrics = step(state, parallel.to_global(batch, mesh))
        skipped.append(float(metrics["step_skipped"]))
        if skipped[-1]:
            np.testing.assert_array_equal(state.params["w"], before)
    assert skipped == [0.0, 1.0, 0.0]
    assert np.isfinite(np.asarray(state.params["w"])).all()
    assert int(state.step) == 3


def test_state_without_the_guard_is_refused_in_one_line():
    tx = optax.sgd(0.1)
    params = {"w": jnp.zeros(3)}
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
        rng=jax.random.PRNGKey(0),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"create_state\(\.\.\., skip_nonfinite=2\)"):
        train.train_step(state, next(batches()), method=METHOD, tx=tx, axis_name=None,
                         skip_nonfinite=2)  # fmt: skip


# Steps (counted from 1) whose parameters the loss sees as NaN: 4 and 5 in a row are one more
# than skip_nonfinite_steps=1 allows.
POISONED_STEPS = (2, 4, 5)


def poisoned(make):
    """``make`` of a method whose loss, at ``POISONED_STEPS``, sees every parameter times NaN.

    The NaN reaches everything a step writes: gradient, BN statistics, the probe's features
    and, for MoCo, the EMA target of the key encoder; the queue gets new keys.
    """

    def make_poisoned(*args, **kwargs):
        method = make(*args, **kwargs)

        def loss(params, state, batch, rng, axis_name):
            bad = jnp.isin(state.step + 1, jnp.asarray(POISONED_STEPS))
            params = jax.tree.map(lambda p: p * jnp.where(bad, jnp.nan, 1).astype(p.dtype), params)
            return method.loss(params, state, batch, rng, axis_name)

        return dataclasses.replace(method, loss=loss)

    return make_poisoned


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.parametrize("config_module", [simclr_fashion_mnist, moco_v2_fashion_mnist])
def test_the_loop_skips_bad_steps_of_real_methods_and_stops_past_the_limit(
    config_module, tmp_path, monkeypatch
):
    config = config_module.get_config("runlocal")
    config.batch_size = 16
    config.total_steps = 6
    config.checkpoint_every_steps = 1
    config.keep_checkpoints = 10
    config.eval_every_steps = 100
    config.skip_nonfinite_steps = 1
    module = METHODS[config.method]
    monkeypatch.setattr(module, "make", poisoned(module.make))
    with pytest.raises(FloatingPointError, match="non-finite metrics at step 5"):
        train.run(config, str(tmp_path))

    checkpoints = checkpoint.Checkpointer(str(tmp_path))
    assert checkpoints.all_steps() == [1, 2, 3, 4]  # the run stopped before saving step 5
    saved = {step: checkpoints.restore_arrays(step) for step in (1, 2, 3, 4)}
    assert saved[2]["probe"] and saved[2]["batch_stats"]
    if config.method == "moco":
        assert set(saved[2]["extra"]) >= {"key_params", "key_batch_stats", "queue", "queue_ptr"}
    for skipped, total in ((2, 1), (4, 2)):
        before, after = saved[skipped - 1], saved[skipped]
        assert int(after["step"]) == skipped
        for part in ("params", "batch_stats", "extra", "probe", "rng"):
            assert_bitwise_equal(after[part], before[part])
        assert_bitwise_equal(after["opt_state"]["inner_state"], before["opt_state"]["inner_state"])
        assert int(after["opt_state"]["total_notfinite"]) == total
    # Step 3 trained again, from the state step 2 kept.
    moved = jax.tree.map(lambda a, b: np.any(a != b), saved[3]["params"], saved[2]["params"])
    assert any(jax.tree.leaves(moved))
    assert all(
        np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved[4]) if leaf.dtype.kind == "f"
    )
