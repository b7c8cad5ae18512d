"""Host crops of resized datasets: boxes from the full image with the configured area and aspect
distribution, two independent views per example, the device applying all but the crop."""

import io
import math
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

from ssl_jax.vision import data as images
from ssl_jax.vision.augment import views

HEIGHT, WIDTH, OUT = 192, 256, 48  # not square: a crop from the centre square misses the sides


def coded_jpeg() -> bytes:
    """Red codes the column (0..255), green the row (0..191): a crop's values give its box."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    array = np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def reference_areas(count, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=0):
    """torchvision's RandomResizedCrop box rule in NumPy: area fractions of the original."""
    rng = np.random.default_rng(seed)
    areas = np.empty(count)
    for index in range(count):
        for _ in range(10):
            target = HEIGHT * WIDTH * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= WIDTH and 0 < h <= HEIGHT:
                break
        else:
            w, h = WIDTH, HEIGHT
        areas[index] = w * h / (HEIGHT * WIDTH)
    return areas


def host_crop_boxes(count, crops_fn=None):
    """(y0, x0, h, w) estimated from the coded values of ``count`` examples' two crops each."""
    dataset = images.ImageDataset("folder:coded", 2, OUT, 3, fixed_size=False)
    crops_fn = crops_fn or images._two_crops(dataset, (0.08, 1.0))
    encoded = tf.constant(coded_jpeg())
    ds = tf.data.Dataset.range(count).map(
        lambda i: crops_fn(
            encoded, tf.constant(0, tf.int64), tf.stack([tf.constant(7, tf.int64), 2 * i])
        )
    )
    crops = np.concatenate([b["image"] for b in ds.batch(256).as_numpy_iterator()])
    assert crops.shape == (count, 2, OUT, OUT, 3) and crops.dtype == np.uint8
    values = crops.reshape(count, 2, OUT * OUT, 3).astype(np.float64)
    low, high = values.min(axis=2), values.max(axis=2)
    # Output pixel centres sit half an output pixel inside the box: widen back to its edges.
    size = (high - low) * OUT / (OUT - 1)
    start = low - 0.5 * size / OUT + 0.5
    return start[..., 1], start[..., 0], size[..., 1], size[..., 0]  # [count, 2] each


def ks_distance(sample, reference):
    sample, reference = np.sort(sample), np.sort(reference)
    grid = np.concatenate([sample, reference])
    cdf = lambda values: np.searchsorted(values, grid, side="right") / len(values)  # noqa: E731
    return float(np.abs(cdf(sample) - cdf(reference)).max())


def test_crops_cover_every_region_with_the_configured_area_distribution():
    y0, x0, h, w = host_crop_boxes(1000)
    areas = (h * w / (HEIGHT * WIDTH)).reshape(-1)
    reference = reference_areas(50_000)
    distance = ks_distance(areas, reference)
    print(f"area fraction: mean {areas.mean():.4f} (reference {reference.mean():.4f}),"
          f" min {areas.min():.4f}, max {areas.max():.4f}, KS distance {distance:.4f}")  # fmt: skip
    # 2,000 crops: the KS 1% critical value is ~0.036; the estimate from pixels adds a little.
    assert distance < 0.05
    assert abs(areas.mean() - reference.mean()) < 0.02
    # Every cell of an 8 x 8 grid of the original is inside some crop, edges and corners too.
    cells_y = (np.arange(8) + 0.5) * HEIGHT / 8
    cells_x = (np.arange(8) + 0.5) * WIDTH / 8
    inside_y = (y0.reshape(-1, 1) <= cells_y) & (cells_y < (y0 + h).reshape(-1, 1))
    inside_x = (x0.reshape(-1, 1) <= cells_x) & (cells_x < (x0 + w).reshape(-1, 1))
    covered = np.einsum("ny,nx->yx", inside_y.astype(int), inside_x.astype(int))
    print("crops covering each of 8 x 8 cells: min", covered.min(), "max", covered.max())
    assert covered.min() > 0
    # The two views of an example are drawn independently.
    first, second = (h * w)[:, 0], (h * w)[:, 1]
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.1
    assert np.mean(np.abs(x0[:, 0] - x0[:, 1]) > 2) > 0.8


def test_a_crop_from_the_centre_square_fails_the_coverage_test(monkeypatch):
    # The planted bug the test above must catch: today's path (shorter side, centre square).
    dataset = images.ImageDataset("folder:coded", 2, OUT, 3, fixed_size=False)
    original = images._crop_box

    def centre_square_box(shape, uniforms, scale, ratio):
        side = tf.reduce_min(shape[:2])
        box = original(tf.stack([side, side]), uniforms, scale, ratio)
        return box + tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, 0, 0])

    monkeypatch.setattr(images, "_crop_box", centre_square_box)
    y0, x0, h, w = host_crop_boxes(300, images._two_crops(dataset, (0.08, 1.0)))
    areas = (h * w / (HEIGHT * WIDTH)).reshape(-1)
    assert x0.min() > 20 and (x0 + w).max() < WIDTH - 20  # never reaches the sides
    assert ks_distance(areas, reference_areas(20_000)) > 0.05


def test_device_views_of_host_crops_skip_the_crop_and_keep_each_view():
    crops = np.zeros((3, 2, 8, 8, 3), np.uint8)
    crops[:, 1] = 255  # view 2's crops white, view 1's black
    kwargs = dict(jitter_prob=0.0, grayscale_prob=0.0)
    first, second = jax.jit(lambda r, x: views.simclr_views(r, x, **kwargs))(
        jax.random.key(0), crops
    )
    assert first.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(first, 0.0)
    np.testing.assert_array_equal(second, 1.0)
    # Every other op still runs: with jitter on, view 2 differs from its crop.
    coded = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 2, 8, 8, 3), np.uint8))
    jittered, _ = views.simclr_views(jax.random.key(1), coded, jitter_prob=1.0)
    assert not np.allclose(jittered, coded[:, 0] / 255.0, atol=1e-3)


def test_folder_train_batches_hold_two_crops_and_resume(tmp_path):
    for split, count in (("train", 12), ("test", 4)):
        for index in range(count):
            folder = tmp_path / split / "ab"[index % 2]
            os.makedirs(folder, exist_ok=True)
            with open(folder / f"{index}.jpg", "wb") as f:
                f.write(coded_jpeg())
    dataset = images.describe(f"folder:{tmp_path}", image_size=OUT)
    assert dataset.host_crops
    kwargs = dict(local_batch_size=4, seed=1, shuffle_buffer=16)
    stream = images.train_batches(dataset, **kwargs)
    run = [next(stream)["image"] for _ in range(5)]  # 3 steps an epoch: crosses one
    assert run[0].shape == (4, 2, OUT, OUT, 3)
    assert not np.array_equal(run[0][:, 0], run[0][:, 1])
    assert not np.array_equal(run[0], run[3])  # a new epoch, new crops
    resumed = images.train_batches(dataset, start_step=2, **kwargs)
    for expected in run[2:5]:
        np.testing.assert_array_equal(next(resumed)["image"], expected)
    # Evaluation: shorter side to OUT / 0.875, centre crop: the middle 87.5% of the height.
    test_images, _ = images.load_split(dataset, "test")
    rows = test_images[0, :, :, 1].astype(float)
    assert test_images.shape == (4, OUT, OUT, 3)
    height = (rows.max() - rows.min()) * OUT / (OUT - 1)  # as in host_crop_boxes
    assert abs(height - 0.875 * HEIGHT) < 3 and abs(rows.min() - 0.0625 * HEIGHT) < 3


def resize_errors(image, boxes, size=224):
    """|fast host resize - antialiased resize| over the crops ``boxes`` (y0, x0, h, w) of image."""
    fast = tf.function(images._resize_view)
    errors = []
    for y0, x0, h, w in boxes:
        crop = tf.constant(image[y0 : y0 + h, x0 : x0 + w])
        reference = tf.cast(
            tf.clip_by_value(tf.round(tf.image.resize(crop, (size, size), antialias=True)), 0, 255),
            tf.uint8,
        )
        got = fast(crop, size)
        errors.append(np.abs(got.numpy().astype(int) - reference.numpy().astype(int)).reshape(-1))
    return np.concatenate(errors)


def test_fast_resize_stays_close_to_the_antialiased_one_and_does_not_alias():
    photo = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    image = np.asarray(Image.open(photo).convert("RGB"))  # 600 x 512, a real photo
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(24):  # growing, shrinking and mixed crops
        h, w = rng.integers(100, 513, 2)
        boxes.append((rng.integers(0, 601 - h), rng.integers(0, 513 - w), h, w))
    errors = resize_errors(image, boxes)
    print(f"photo: |fast - antialiased| mean {errors.mean():.3f}, 99th percentile "
          f"{np.percentile(errors, 99):.0f}, max {errors.max()} (of 255)")  # fmt: skip
    # Measured: 0.72 / 8 / 41 (0.50 / 7 / 41 with the antialiased kernel for one-axis shrinks);
    # bilinear everywhere 1.56 / 15 / 82, area everywhere 0.94 / 9 / 54.
    assert errors.mean() < 0.75 and np.percentile(errors, 99) <= 8
    # One-pixel stripes shrunk 2.5x: the antialiased resize is a flat grey; the box filter
    # leaves faint bands (measured max 31), a filter that samples instead (bilinear) 75.
    stripes = np.zeros((560, 560, 3), np.uint8)
    stripes[:, ::2] = 255
    errors = resize_errors(stripes, [(0, 0, 560, 560)])
    print(f"stripes: |fast - antialiased| mean {errors.mean():.2f}, max {errors.max()}")
    assert errors.max() <= 40
