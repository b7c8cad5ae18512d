"""MAE: the loss against NumPy (values and gradients, 1 and 8 devices), the patch masks, an
encoder that sees only the visible patches, and steps that are device- and resume-independent.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from resume import assert_bitwise_equal
from test_loss_gradients import _assert_close
from test_noncontrastive import DEVICES, _numeric_grad, make_step, run_steps

from configs import mae_fashion_mnist
from ssl_jax import config_checks, losses, masking
from ssl_jax.core import parallel
from ssl_jax.methods import METHODS
from ssl_jax.models.mae import patchify, unpatchify

AXIS = parallel.DATA_AXIS


def np_mae(predictions, patches, norm_pix=True, eps=1e-6):
    """MAE's forward_loss in float64, written from the paper's definition."""
    target = np.array(patches, np.float64)
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = ((target - mean) ** 2).sum(-1, keepdims=True) / (target.shape[-1] - 1)
        target = (target - mean) / np.sqrt(var + eps)
    per_patch = ((np.asarray(predictions, np.float64) - target) ** 2).mean(-1)
    return per_patch.sum() / per_patch.size


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_value_and_gradient_match_numpy(norm_pix):
    rng = np.random.default_rng(0)
    patches = rng.uniform(size=(3, 4, 6))
    patches[0, 0] = 0.25  # a flat patch: variance 0, the target is 0 / sqrt(eps)
    predictions = rng.normal(size=patches.shape)
    value, grads = jax.value_and_grad(
        lambda p, t: losses.mae_loss(p, t, norm_pix=norm_pix), argnums=(0, 1)
    )(predictions.astype(np.float32), patches.astype(np.float32))
    want = np_mae(predictions, patches, norm_pix)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    numeric = _numeric_grad(lambda a, b: np_mae(a, b, norm_pix), predictions, patches, h=1e-5)
    np.testing.assert_allclose(grads[0], numeric[0], rtol=1e-3, atol=1e-6)
    if not norm_pix:  # standardised targets' gradient blows up at the flat patch
        np.testing.assert_allclose(grads[1], numeric[1], rtol=1e-3, atol=1e-6)


def test_eight_devices_equal_one_device_value_and_gradient():
    rng = np.random.default_rng(1)
    n, m, d = 2 * DEVICES, 3, 5
    params = {"w": rng.normal(size=(d, d)).astype(np.float32)}
    data = {
        "x": rng.normal(size=(n, m, d)).astype(np.float32),
        "t": rng.uniform(size=(n, m, d)).astype(np.float32),
    }
    data["t"][:2] *= 10  # one device's targets differ in scale from the others'

    def loss(p, d, axis_name):
        return losses.mae_loss(d["x"] @ p["w"], d["t"], axis_name=axis_name)

    want_value, want_grads = jax.jit(jax.value_and_grad(lambda p: loss(p, data, None)))(params)
    mesh = parallel.make_mesh()
    mapped = jax.shard_map(
        lambda p, d: loss(p, d, AXIS), mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P()
    )
    value, grads = jax.jit(jax.value_and_grad(mapped))(params, data)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    _assert_close(grads, want_grads, "shard_map")

    def pmapped(p, d):
        value, grads = jax.value_and_grad(lambda p: loss(p, d, AXIS))(p)
        return value, parallel.pmap_replicated_grads(grads)

    split = jax.tree.map(lambda x: x.reshape(DEVICES, -1, *x.shape[1:]), data)
    values, grads = jax.pmap(pmapped, axis_name=AXIS, in_axes=(None, 0))(params, split)
    np.testing.assert_allclose(values[5], want_value, rtol=2e-6)
    _assert_close(jax.tree.map(lambda g: g[5], grads), want_grads, "pmap")


def test_masks_partition_every_image_and_follow_the_example_not_its_place():
    rng = jax.random.key(3)
    visible, masked = masking.mask_patches(rng, 6, 49, mask_ratio=0.75)
    assert visible.shape == (6, 12) and masked.shape == (6, 37)
    for v, m in zip(np.asarray(visible), np.asarray(masked), strict=True):
        assert sorted(v.tolist() + m.tolist()) == list(range(49))
        assert (np.diff(v) > 0).all() and (np.diff(m) > 0).all()
    ids = np.array([4, 0, 5])
    again, _ = masking.mask_patches(rng, 3, 49, mask_ratio=0.75, example_ids=ids)
    np.testing.assert_array_equal(again, np.asarray(visible)[ids])
    other_step, _ = masking.mask_patches(jax.random.key(4), 6, 49, mask_ratio=0.75)
    assert not np.array_equal(other_step, visible)


def test_every_patch_is_masked_at_the_ratio_over_many_draws():
    visible, _ = masking.mask_patches(jax.random.key(0), 4000, 16, mask_ratio=0.75)
    seen = np.bincount(np.asarray(visible).ravel(), minlength=16) / 4000
    # Each patch is visible with probability 4/16; 4,000 draws: standard error 0.007.
    np.testing.assert_allclose(seen, 0.25, atol=0.03)


def test_patchify_follows_the_vit_token_order():
    images = np.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3)
    patches = np.asarray(patchify(images, 4))
    np.testing.assert_array_equal(patches[1, 2], images[1, 4:8, 0:4].ravel())  # row 1, col 0
    np.testing.assert_array_equal(unpatchify(patches, 4, 3), images)


@pytest.fixture(scope="module")
def tiny():
    config = mae_fashion_mnist.get_config("runlocal")
    method = METHODS["mae"].make(config, 16, None)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    variables = method.init(jax.random.key(0), {"image": images})
    return config, method, variables, images


def test_the_encoder_sees_only_the_visible_patches(tiny):
    """Predictions depend on visible pixels alone: repaint the masked patches, nothing moves."""
    _, method, variables, images = tiny
    rng = jax.random.key(7)
    visible, masked, predictions = method.predict(variables, images, rng)
    patches = np.asarray(patchify(images, method.patch_size)).copy()
    rows = np.arange(len(images))[:, None]
    repainted = patches.copy()
    repainted[rows, np.asarray(masked)] = 255 - repainted[rows, np.asarray(masked)]
    repainted = np.asarray(unpatchify(repainted, method.patch_size, 1)).astype(np.uint8)
    _, same_masked, same = method.predict(variables, repainted, rng)
    np.testing.assert_array_equal(same_masked, masked)
    np.testing.assert_allclose(same, predictions, rtol=1e-5, atol=1e-6)
    touched = patches.copy()
    touched[0, int(visible[0, 0])] = 255 - touched[0, int(visible[0, 0])]
    touched = np.asarray(unpatchify(touched, method.patch_size, 1)).astype(np.uint8)
    _, _, moved = method.predict(variables, touched, rng)
    assert np.abs(np.asarray(moved[0]) - np.asarray(predictions[0])).max() > 1e-4
    np.testing.assert_allclose(moved[1:], predictions[1:], rtol=1e-5, atol=1e-6)


def test_encode_reads_the_whole_image(tiny):
    _, method, variables, images = tiny
    features = method.encode(variables, images)
    assert features.shape == (4, 32)
    changed = images.copy()
    changed[:, -4:, -4:] = 255 - changed[:, -4:, -4:]  # the last patch only
    assert np.abs(np.asarray(method.encode(variables, changed) - features)).max() > 1e-4


IMAGES = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)


def test_step_restored_from_a_checkpoint_is_bitwise_identical(tmp_path):
    """The masks come from the restored step and key, AdamW's moments from the checkpoint: the
    same patches, the same update."""
    config = mae_fashion_mnist.get_config("runlocal")
    states, _, resumed = run_steps(config, 1, IMAGES, 2, checkpoint_dir=str(tmp_path))
    assert_bitwise_equal(resumed, states[2])


def test_steps_on_eight_devices_equal_one_device():
    """SGD, not AdamW: parameters whose exact gradient is 0 (attention's key biases) get float
    noise that Adam's normalisation turns into full steps, differently on 1 and 8 devices."""
    config = mae_fashion_mnist.get_config("runlocal")
    config.optimizer, config.learning_rate, config.weight_decay = "sgd", 0.5, 0.0
    sharded, sharded_metrics, _ = run_steps(config, DEVICES, IMAGES, 2)
    single, single_metrics, _ = run_steps(config, 1, IMAGES, 2)
    for got, want in zip(sharded_metrics, single_metrics, strict=True):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(sharded[-1].params),
        jax.tree.leaves(single[-1].params), strict=True,
    ):  # fmt: skip
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path)
        )
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), single[-1].params, single[0].params)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_loss_falls_on_one_batch():
    """A few AdamW steps on one batch: reconstruction gets better (the loss can learn)."""
    config = mae_fashion_mnist.get_config("runlocal")
    config.learning_rate = 1e-2
    step_fn, state, batch = make_step(config, jax.devices()[:1], IMAGES, total_steps=30)
    values = []
    for _ in range(30):
        state, metrics = step_fn(state, batch)
        values.append(float(metrics["loss"]))
    assert np.mean(values[-5:]) < 0.9 * np.mean(values[:5]), values


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mae.mask_ratio", 1.0, r"mae.mask_ratio=1.0 must be in \(0, 1\)"),
        ("model.name", "resnet18", r"model.name='resnet18' must be one of 'vit_tiny'"),
        ("mae.decoder_depth", 0, r"mae.decoder_depth=0 must be"),
    ],
)
def test_bad_settings_get_one_line_naming_the_field(field, value, message):
    config = mae_fashion_mnist.get_config("runlocal")
    parent, _, name = field.rpartition(".")
    config[parent][name] = value
    problem = config_checks.field_problem(config)
    assert problem is not None and "\n" not in problem
    assert re.search(message, problem), problem


def test_a_mask_ratio_that_leaves_no_visible_patch_is_refused_before_compiling():
    config = mae_fashion_mnist.get_config("runlocal")
    config.mae.mask_ratio = 0.99  # 49 patches at 28 px: int(0.49) = 0 visible
    with pytest.raises(ValueError, match=r"mask_ratio=0.99 of 49 patches leaves 0 visible"):
        METHODS["mae"].make(config, 28, None)


def test_masked_loss_reads_only_the_masked_patches():
    """The reference's loss is the mean over mask == 1 of the full decoder output; ours gathers
    the masked rows first: equal on any predictions and targets."""
    rng = np.random.default_rng(2)
    full_pred = rng.normal(size=(3, 16, 8)).astype(np.float32)
    full_target = rng.uniform(size=(3, 16, 8)).astype(np.float32)
    _, masked = masking.mask_patches(jax.random.key(0), 3, 16, mask_ratio=0.75)
    mask = np.zeros((3, 16))
    mask[np.arange(3)[:, None], np.asarray(masked)] = 1
    t = full_target
    mean, var = t.mean(-1, keepdims=True), t.var(-1, ddof=1, keepdims=True)
    per_patch = ((full_pred - (t - mean) / np.sqrt(var + 1e-6)) ** 2).mean(-1)
    want = (per_patch * mask).sum() / mask.sum()
    got = losses.mae_loss(
        masking.gather_positions(jnp.asarray(full_pred), masked),
        masking.gather_positions(jnp.asarray(full_target), masked),
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_reconstruction_plot_maps_perfect_predictions_back_to_the_image():
    """Predictions equal to the loss's standardised targets must draw the original back."""
    from ssl_jax.vision.report import reconstruction_columns

    originals = np.random.default_rng(5).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    visible, masked = masking.mask_patches(jax.random.key(1), 3, 4, mask_ratio=0.5)
    patches = patchify(jnp.asarray(originals, jnp.float32) / 255.0, 4)
    truth = np.asarray(masking.gather_positions(patches, masked))
    standardised = (truth - truth.mean(-1, keepdims=True)) / np.sqrt(
        truth.var(-1, ddof=1, keepdims=True) + 1e-6
    )
    hidden, pasted = reconstruction_columns(
        originals, masked, standardised, patch_size=4, norm_pix=True
    )
    np.testing.assert_allclose(pasted, originals / 255.0, atol=1e-5)
    grey = np.asarray(patchify(hidden, 4))[np.arange(3)[:, None], np.asarray(masked)]
    np.testing.assert_array_equal(grey, 0.5)
    kept = np.asarray(patchify(hidden, 4))[np.arange(3)[:, None], np.asarray(visible)]
    np.testing.assert_allclose(
        kept, np.asarray(patches)[np.arange(3)[:, None], np.asarray(visible)]
    )
