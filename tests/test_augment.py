"""Tests for ssl_jax.vision.augment: conventions against reference formulas, determinism, jit and
sharding.

Images are tiny (8x8, 16x16) and jitted functions are shared between tests to keep compiles few.
"""

from __future__ import annotations

import colorsys
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.vision import augment

BATCH_SIZE = 8

# Tests call jitted functions: eager dispatch compiles every primitive separately and is several
# times slower here. test_jitted_views_match_eager_augment_with_documented_keys covers eager.
rgb_to_hsv = jax.jit(augment.rgb_to_hsv)
hsv_to_rgb = jax.jit(augment.hsv_to_rgb)
adjust_hue = jax.jit(augment.adjust_hue)
adjust_contrast = jax.jit(augment.adjust_contrast)
adjust_saturation = jax.jit(augment.adjust_saturation)
color_jitter = jax.jit(augment.color_jitter, static_argnames="strength")
gaussian_blur = jax.jit(augment.gaussian_blur, static_argnames=("sigma_range", "kernel_fraction"))


@functools.cache
def jitted_views(**augment_kwargs):
    """One jitted simclr_views per configuration, so tests sharing a config share a compile."""
    return jax.jit(functools.partial(augment.simclr_views, **augment_kwargs))


# Crop to half size, with every op switched on at some probability.
VIEW_CONFIG = {"out_size": 8, "blur_prob": 0.5}


def random_uint8_images(seed: int, shape=(BATCH_SIZE, 16, 16, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def random_unit_image(seed: int, shape=(8, 8, 3)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# simclr_views / simclr_augment.


@pytest.fixture(scope="module")
def batch_views_fn():
    """Jitted views for [8, 16, 16, 3] batches, allowed to trace once for the whole module."""

    @chex.assert_max_traces(n=1)
    def views(rng, images, example_ids=None):
        return augment.simclr_views(rng, images, example_ids=example_ids, **VIEW_CONFIG)

    return jax.jit(views)


def test_views_deterministic_given_key_and_differ_across_keys(batch_views_fn):
    images = random_uint8_images(0)
    views_fn = batch_views_fn
    first = views_fn(jax.random.key(0), images)
    again = views_fn(jax.random.key(0), images)
    other = views_fn(jax.random.key(1), images)  # must not retrace
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    # The two views of one example differ, and so do different examples' augmentations.
    assert not np.allclose(first[0], first[1])


def test_views_shape_dtype_and_range_for_uint8(batch_views_fn):
    images = random_uint8_images(1)
    view1, view2 = batch_views_fn(jax.random.key(2), images)
    for view in (view1, view2):
        assert view.shape == (BATCH_SIZE, 8, 8, 3)
        assert view.dtype == jnp.float32
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0


def test_grey_images_default_out_size_and_raw_keys():
    images = random_uint8_images(3, shape=(4, 8, 8, 1))
    # An old-style uint32 key [2] works as well as a typed key.
    view1, view2 = jitted_views()(jax.random.PRNGKey(0), images)
    assert view1.shape == view2.shape == (4, 8, 8, 1)
    assert view1.dtype == jnp.float32
    assert float(view1.min()) >= 0.0 and float(view1.max()) <= 1.0


def test_views_independent_of_batch_split(batch_views_fn):
    images = random_uint8_images(4)
    views_fn = jitted_views(**VIEW_CONFIG)
    rng = jax.random.key(5)
    whole = batch_views_fn(rng, images)
    first_half = views_fn(rng, images[:4], example_ids=jnp.arange(0, 4))
    second_half = views_fn(rng, images[4:], example_ids=jnp.arange(4, 8))
    for view in range(2):
        split = np.concatenate([first_half[view], second_half[view]])
        np.testing.assert_allclose(whole[view], split, rtol=0, atol=1e-6)


def test_jitted_views_match_eager_augment_with_documented_keys(batch_views_fn):
    """Checks jit against eager execution and the key contract of simclr_views in one go."""
    images = random_uint8_images(7)
    rng = jax.random.key(8)
    views = batch_views_fn(rng, images)
    example = 5
    for view_id in range(2):
        view_key = jax.random.fold_in(jax.random.fold_in(rng, example), view_id)
        eager = augment.simclr_augment(view_key, images[example], **VIEW_CONFIG)
        np.testing.assert_allclose(views[view_id][example], eager, rtol=0, atol=1e-6)


def test_identity_settings_only_rescale_uint8():
    image = random_uint8_images(9, shape=(8, 8, 3))
    view = augment.simclr_augment(
        jax.random.key(0),
        image,
        out_size=8,
        crop_scale=(1.0, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        flip=False,
    )
    np.testing.assert_allclose(view, image / np.float32(255), rtol=0, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="B, H, W, C"):
        augment.simclr_views(jax.random.key(0), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="example_ids"):
        augment.simclr_views(
            jax.random.key(0), np.zeros((2, 8, 8, 3), np.uint8), example_ids=jnp.arange(3)
        )
    with pytest.raises(ValueError, match="uint8 or float"):
        augment.simclr_augment(jax.random.key(0), np.zeros((8, 8, 3), np.int32), out_size=8)


# ---------------------------------------------------------------------------------------------
# Crop.


def test_whole_image_box_reproduces_image_exactly():
    image = random_unit_image(10)
    np.testing.assert_array_equal(augment.crop_and_resize(image, (0, 0, 8, 8), 8), image)


@pytest.mark.parametrize(
    "box, out_size",
    [
        ((0, 0, 8, 4), 8),  # left half, upsampled along x
        ((0, 4, 8, 4), 8),  # right half
        ((2, 1, 5, 6), 3),  # interior box, downsampled (antialias kernel widens)
        ((1, 3, 3, 2), 7),  # small interior box, upsampled
    ],
)
def test_box_matches_resize_of_the_cropped_image(box, out_size):
    image = random_unit_image(11)
    y0, x0, h, w = box
    expected = jax.image.resize(
        image[y0 : y0 + h, x0 : x0 + w], (out_size, out_size, 3), "linear", antialias=True
    )
    crop = jax.jit(augment.crop_and_resize, static_argnums=2)
    np.testing.assert_allclose(crop(image, box, out_size), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("height, width", [(224, 224), (96, 160)])
def test_sampled_boxes_respect_scale_ratio_and_bounds(height, width):
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    keys = jax.random.split(jax.random.key(0), 2000)
    sample = jax.jit(
        jax.vmap(lambda key: augment.sample_crop_box(key, height, width, scale, ratio))
    )
    y0, x0, h, w = (np.asarray(v) for v in sample(keys))
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= height).all() and (x0 + w <= width).all()
    assert (h >= 1).all() and (w >= 1).all()
    # Sizes are rounded to whole pixels, so allow half a pixel on each side.
    area_fraction = h * w / (height * width)
    slack = (1 + 0.5 / np.minimum(h, w)) ** 2
    assert (area_fraction <= scale[1] * slack).all()
    assert (area_fraction >= scale[0] / slack).all()
    aspect = w / h
    assert (aspect <= ratio[1] * (1 + 0.5 / w) / (1 - 0.5 / h)).all()
    assert (aspect >= ratio[0] * (1 - 0.5 / w) / (1 + 0.5 / h)).all()
    # The ranges are actually explored, not just respected.
    # (A 96x160 image fits boxes of at most 96x128, 0.8 of its area, at aspect <= 4/3.)
    assert area_fraction.min() < 0.15 and area_fraction.max() > 0.75


def test_crop_offsets_cover_every_position():
    keys = jax.random.split(jax.random.key(1), 500)
    sample = jax.jit(
        jax.vmap(lambda key: augment.sample_crop_box(key, 8, 8, (0.25, 0.25), (1.0, 1.0)))
    )
    y0, x0, h, w = (np.asarray(v) for v in sample(keys))
    assert (h == 4).all() and (w == 4).all()
    assert set(y0.tolist()) == set(range(5)) and set(x0.tolist()) == set(range(5))


@pytest.mark.parametrize(
    "height, width, expected",
    [
        (16, 16, (0, 0, 16, 16)),  # aspect in range: the whole image
        (10, 40, (0, 13, 10, 13)),  # too wide: centred box of aspect 4/3
        (40, 10, (13, 0, 13, 10)),  # too tall: centred box of aspect 3/4 (h = round(10 / 0.75))
    ],
)
def test_crop_box_fallback_when_no_candidate_fits(height, width, expected):
    box = augment.sample_crop_box(jax.random.key(0), height, width, (2.0, 3.0), (3 / 4, 4 / 3))
    assert tuple(int(v) for v in box) == expected


# ---------------------------------------------------------------------------------------------
# Colour.


def test_rgb_hsv_round_trip_and_match_colorsys():
    colours = np.random.default_rng(12).uniform(size=(500, 3)).astype(np.float32)
    # Greys, black, white and primaries exercise the chroma == 0 and max-channel ties.
    special = np.array(
        [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
        np.float32,
    )
    colours = np.concatenate([colours, special])
    hsv = np.asarray(rgb_to_hsv(colours))
    expected = np.array([colorsys.rgb_to_hsv(*c) for c in colours.astype(np.float64)])
    np.testing.assert_allclose(hsv, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hsv), colours, rtol=0, atol=1e-5)


def test_adjust_hue_matches_colorsys_rotation():
    colours = np.random.default_rng(13).uniform(size=(200, 3)).astype(np.float32)
    shift = 0.3
    expected = []
    for colour in colours.astype(np.float64):
        hue, saturation, value = colorsys.rgb_to_hsv(*colour)
        expected.append(colorsys.hsv_to_rgb((hue + shift) % 1.0, saturation, value))
    np.testing.assert_allclose(adjust_hue(colours, shift), expected, rtol=0, atol=1e-5)


def test_neutral_factors_leave_image_unchanged():
    image = random_unit_image(14)
    np.testing.assert_array_equal(augment.adjust_brightness(image, 1.0), image)
    np.testing.assert_allclose(adjust_contrast(image, 1.0), image, rtol=0, atol=1e-6)
    np.testing.assert_allclose(adjust_saturation(image, 1.0), image, rtol=0, atol=1e-6)
    np.testing.assert_allclose(adjust_hue(image, 0.0), image, rtol=0, atol=1e-5)
    jittered = color_jitter(jax.random.key(0), image, strength=0.0)
    np.testing.assert_allclose(jittered, image, rtol=0, atol=1e-5)


def test_contrast_and_saturation_blend_like_torchvision():
    image = random_unit_image(15)
    grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
    expected_contrast = np.clip(1.5 * image - 0.5 * grey.mean(), 0, 1)
    expected_saturation = np.clip(1.5 * image - 0.5 * grey[..., None], 0, 1)
    np.testing.assert_allclose(adjust_contrast(image, 1.5), expected_contrast, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        adjust_saturation(image, 1.5), expected_saturation, rtol=0, atol=1e-6
    )


def test_grayscale_matches_luma_formula():
    image = random_unit_image(16)
    grey = np.asarray(augment.to_grayscale(image))
    expected = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    assert grey.shape == image.shape
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    np.testing.assert_allclose(grey[..., 0], expected, rtol=0, atol=1e-6)
    single = image[..., :1]
    np.testing.assert_array_equal(augment.to_grayscale(single), single)


def test_color_jitter_is_random_in_range_and_handles_grey():
    image = random_unit_image(17)
    first = color_jitter(jax.random.key(0), image, strength=1.0)
    second = color_jitter(jax.random.key(1), image, strength=1.0)
    assert not np.allclose(first, second)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    grey = color_jitter(jax.random.key(0), image[..., :1], strength=1.0)
    assert grey.shape == (8, 8, 1)


# ---------------------------------------------------------------------------------------------
# Blur.


def test_gaussian_blur_matches_numpy_separable_filter():
    image = random_unit_image(18, shape=(16, 16, 3))
    sigma = 1.3
    blurred = gaussian_blur(
        jax.random.key(0), image, sigma_range=(sigma, sigma), kernel_fraction=0.5
    )
    radius = 4  # int(0.5 * 16) // 2
    offsets = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(t * padded[i : i + 16] for i, t in enumerate(taps))
    expected = sum(t * rows[:, i : i + 16] for i, t in enumerate(taps))
    np.testing.assert_allclose(blurred, expected, rtol=0, atol=1e-5)


def test_asymmetric_second_view_changes_only_view_two():
    from ssl_jax.vision.augment import solarize

    images = np.random.default_rng(5).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    key = jax.random.key(3)
    symmetric = augment.simclr_views(key, images, out_size=12)
    view1, view2 = augment.simclr_views(
        key, images, out_size=12, second_view={"solarize_prob": 1.0}
    )
    np.testing.assert_allclose(view1, symmetric[0], atol=1e-6)  # vmapped over B, not 2B
    np.testing.assert_allclose(view2, solarize(symmetric[1]), atol=1e-6)
    assert not np.allclose(view2, symmetric[1])
    # Solarizing with probability 0.5 hits some examples and not others.
    _, half = augment.simclr_views(key, images, out_size=12, second_view={"solarize_prob": 0.5})
    hit = [not np.allclose(half[i], symmetric[1][i]) for i in range(6)]
    assert any(hit) and not all(hit), hit
    with pytest.raises(ValueError, match="second_view"):
        augment.simclr_views(key, images, second_view={"blurr_prob": 1.0})
