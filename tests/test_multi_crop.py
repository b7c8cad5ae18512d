"""Multi-crop beyond DINO: SimCLR's multi-view NT-Xent against a float64 NumPy formula (values,
gradients, 1 and 8 devices), the views' settings, and SimCLR and BYOL steps with local crops on
8 devices equal to one device."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from resume import assert_states_close
from test_data import needs_fashion_mnist
from test_losses import numeric_grad, numpy_nt_xent
from test_noncontrastive import DEVICES, IMAGES, make_step, run_steps, tiny_config

from ssl_jax import config_checks, losses
from ssl_jax.core import parallel
from ssl_jax.methods import METHODS, byol, simclr
from ssl_jax.vision import augment


def numpy_multi_crop_nt_xent(views, temperature):
    """Anchor by anchor: its positives are its image's other views, its candidates all others."""
    z = np.concatenate(views).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    image = np.tile(np.arange(len(views[0])), len(views))
    terms = []
    for a in range(len(z)):
        similarity = z @ z[a] / temperature
        others = np.arange(len(z)) != a
        positives = others & (image == image[a])
        terms.append(
            np.log(np.exp(similarity[others]).sum()) - np.log(np.exp(similarity[positives]).sum())
        )
    return float(np.mean(terms))


@pytest.mark.parametrize("num_views,temperature", [(2, 0.2), (3, 0.5), (6, 0.1)])
def test_loss_matches_numpy(num_views, temperature):
    views = list(np.random.default_rng(num_views).normal(size=(num_views, 10, 5)))
    loss = jax.jit(functools.partial(losses.multi_crop_nt_xent, temperature=temperature))(views)
    np.testing.assert_allclose(float(loss), numpy_multi_crop_nt_xent(views, temperature), rtol=1e-5)


def test_two_views_are_nt_xent():
    z1, z2 = np.random.default_rng(0).normal(size=(2, 9, 4))
    np.testing.assert_allclose(
        numpy_multi_crop_nt_xent([z1, z2], 0.3), numpy_nt_xent(z1, z2, 0.3), rtol=1e-12
    )
    np.testing.assert_allclose(
        losses.multi_crop_nt_xent([z1, z2], temperature=0.3),
        losses.nt_xent(z1, z2, temperature=0.3),
        rtol=1e-6,
    )


def test_gradient_matches_finite_differences():
    views = np.random.default_rng(1).normal(size=(4, 3, 3))
    grad = jax.grad(lambda v: losses.multi_crop_nt_xent(list(v), temperature=0.3))(
        jnp.asarray(views, jnp.float32)
    )
    expected = numeric_grad(lambda v: numpy_multi_crop_nt_xent(list(v), 0.3), views)
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-5)


def test_eight_devices_equal_one_device_value_and_gradient():
    views = jnp.asarray(np.random.default_rng(2).normal(size=(4, 32, 8)), jnp.float32)

    def loss(v, axis_name=None):
        return losses.multi_crop_nt_xent(list(v), temperature=0.2, axis_name=axis_name)

    want_value, want_grad = jax.value_and_grad(loss)(views)
    sharded = parallel.shard(
        jax.value_and_grad(functools.partial(loss, axis_name=parallel.DATA_AXIS)),
        parallel.make_mesh(),
        in_specs=(P(None, "data"),),
        out_specs=(P(), P(None, "data")),
    )
    value, grad = sharded(views)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    # A gradient off by the device count, or anchors scored against their own device only,
    # miss by far more than float32 reordering.
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


def test_bad_views_are_refused():
    with pytest.raises(ValueError, match="at least 2 views"):
        losses.multi_crop_nt_xent([jnp.ones((4, 3))])
    with pytest.raises(ValueError, match="one shape"):
        losses.multi_crop_nt_xent([jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((5, 3))])
    with pytest.raises(ValueError, match="temperature"):
        losses.multi_crop_nt_xent([jnp.ones((4, 3))] * 3, temperature=0.0)


def _multi_crop_config(method, num_local_crops=2):
    config = tiny_config(method)
    config.multi_crop.num_local_crops = num_local_crops
    config.multi_crop.local_crop_size = 6
    config.multi_crop.local_crop_scale = (0.05, 0.4)
    return config


def test_view_settings_are_two_global_views_then_the_local_ones():
    config = _multi_crop_config("byol", num_local_crops=3)
    settings = augment.multi_crop_settings(config, 12)
    assert [s["out_size"] for s in settings] == [12, 12, 6, 6, 6]
    assert [s["crop_scale"] for s in settings[2:]] == [(0.05, 0.4)] * 3
    # BYOL's second view blurs less and solarizes (augment.second_view); the local ones do not.
    assert settings[1] == {**settings[0], **config.augment.second_view.to_dict()}
    assert settings[0]["solarize_prob"] == settings[2]["solarize_prob"] == 0.0
    assert not any("second_view" in s for s in settings)
    config.multi_crop.num_local_crops = 0
    assert augment.multi_crop_settings(config, 12) is None


def test_settings_multi_crop_cannot_train_with_are_refused_in_one_line():
    config = _multi_crop_config("simclr")
    config.grad_cache_chunk_size = 2
    with pytest.raises(ValueError, match="grad_cache_chunk_size=2 works with two views only"):
        simclr.validate(config, 16)
    config = _multi_crop_config("simclr")
    config.multi_crop.local_crop_scale = (0.4, 1.5)
    assert "multi_crop.local_crop_scale" in config_checks.field_problem(config)
    config = _multi_crop_config("byol")  # local crops of 6 px, patches of 4
    config.model.name, config.model.patch_size = "vit_tiny", 4
    with pytest.raises(ValueError, match="multi_crop.local_crop_size=6 must divide by model"):
        byol.validate(config, 16)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_multi_crop_steps_on_eight_devices_equal_one_device(method):
    """SGD, one step (and one compile for three): BatchNorm over the global batch per view
    size, the loss's gather across devices, BYOL's target on the global views only."""
    config = _multi_crop_config(method)
    config.optimizer, config.learning_rate, config.weight_decay = "sgd", 0.5, 0.0
    sharded, sharded_metrics, _ = run_steps(config, DEVICES, IMAGES, 1)
    step_fn, state, batch = make_step(config, jax.devices()[:1], IMAGES)
    single, single_metrics = [jax.device_get(state)], []
    for _ in range(3):  # each step draws new crops of the same shapes: one compile
        state, metrics = step_fn(state, batch)
        single.append(jax.device_get(state))
        single_metrics.append(jax.device_get(metrics))
    assert step_fn._cache_size() == 1
    single, single_metrics = single[:2], single_metrics[:1]

    # The local views enter the loss: at the first step's parameters and key, the multi-crop
    # loss (forward only) is the step's, and the two-view loss is not.
    def first_loss(config):
        loss_fn = METHODS[method].make(config, IMAGES.shape[1], None, total_steps=4).loss
        start = single[0]
        rng = jax.random.fold_in(start.rng, start.step)
        return float(jax.jit(lambda s, b: loss_fn(s.params, s, b, rng, None)[0])(start, batch))

    np.testing.assert_allclose(first_loss(config), single_metrics[0]["loss"], rtol=1e-5)
    two_views = _multi_crop_config(method, num_local_crops=0)
    assert abs(first_loss(two_views) - float(single_metrics[0]["loss"])) > 1e-3
    for got, want in zip(sharded_metrics, single_metrics, strict=True):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    # Tolerance: float32 sums in another order through BN and an SGD step; per-device
    # statistics or a gradient off by the device count miss by > 1e-2.
    assert_states_close(sharded[-1], single[-1], rtol=1e-4, atol=1e-4)


@needs_fashion_mnist
def test_augmented_views_plot_shows_the_local_crops():
    from ssl_jax.vision import report

    config = _multi_crop_config("simclr")
    run = types.SimpleNamespace(config=config, title=lambda: "simclr")
    figure = report._augmented_views(run)
    titles = [axes.get_title() for axes in figure.axes[:5]]
    assert titles == ["image", "global 1", "global 2", "local 1", "local 2"]
    config.multi_crop.num_local_crops = 0  # two views: the pairs plot, without local columns
    titles = {axes.get_title() for axes in report._augmented_views(run).axes}
    assert not any(title.startswith("local") for title in titles)
