"""Bad image input: undecodable files are skipped and counted, odd sizes and channel counts are
converted, empty splits and oversized batches are one-line errors before anything runs."""

import os

import numpy as np
import pytest
import tensorflow as tf

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.vision import data as images


def write_image(path, array):
    encode = tf.io.encode_png if path.endswith(".png") else tf.io.encode_jpeg
    with open(path, "wb") as f:
        f.write(encode(array).numpy())


def make_folder(root, *, train_count=9, test_count=3, corrupt=("train", "test")):
    """``root/{train,test}/{a,b}/`` with colour, grey and RGBA images of several sizes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_count), ("test", test_count)):
        for label in "ab":  # a split of count 0 is empty class folders, not a missing split
            os.makedirs(os.path.join(root, split, label), exist_ok=True)
        for index in range(count):
            folder = os.path.join(root, split, "ab"[index % 2])
            channels = (3, 1, 4)[index % 3]  # colour, grey, with alpha
            shape = (20 + 3 * index, 30, channels)
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            name = f"{index}.png" if channels != 3 else f"{index}.jpg"
            write_image(os.path.join(folder, name), array)
        if split in corrupt:
            with open(os.path.join(root, split, "a", "broken.jpg"), "wb") as f:
                f.write(b"\xff\xd8\xff not really a jpeg" + bytes(range(256)))
    return f"folder:{root}"


def test_undecodable_images_are_skipped_and_counted(tmp_path):
    dataset = images.describe(make_folder(str(tmp_path)), image_size=16)
    batches = images.train_batches(dataset, local_batch_size=4, seed=0, shuffle_buffer=64)
    first_epoch = [next(batches) for _ in range(2)]  # 9 good images: two full batches
    for batch in first_epoch:
        assert batch["image"].shape == (4, 2, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batches.skipped_examples == 0  # not known before the pass ends
    next(batches)
    assert batches.skipped_examples == 1
    seen = np.concatenate([b["label"] for b in first_epoch])
    assert set(seen) <= {0, 1}

    test_images, test_labels = images.load_split(dataset, "test")
    assert test_images.shape == (3, 16, 16, 3) and len(test_labels) == 3


def test_stored_images_of_another_size_or_channel_count_are_converted():
    grey_dataset = images._preprocess(images.DATASETS["fashion_mnist"])  # grey 28 x 28
    colour_dataset = images._preprocess(images.DATASETS["cifar10"])  # RGB 32 x 32

    def convert(preprocess, array):
        example = {"image": tf.io.encode_png(array), "label": tf.constant(3, tf.int64)}
        out = preprocess(example)
        assert int(out["label"]) == 3
        return out["image"].numpy()

    rng = np.random.default_rng(1)
    for shape in ((28, 28, 1), (20, 36, 1), (28, 28, 3), (40, 40, 4)):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        out = convert(grey_dataset, array)
        assert out.shape == (28, 28, 1) and out.dtype == np.uint8, shape
    same = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    np.testing.assert_array_equal(convert(grey_dataset, same), same)  # the right size: untouched

    grey = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
    np.testing.assert_array_equal(convert(colour_dataset, grey), np.repeat(grey, 3, axis=-1))
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    np.testing.assert_array_equal(convert(colour_dataset, rgba), rgba[..., :3])  # alpha dropped
    rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]  # ITU-R 601, as libpng/PIL use
    np.testing.assert_allclose(convert(grey_dataset, rgb)[..., 0], luma, atol=1.01)
    # A 16-bit PNG is scaled to uint8 (65535 -> 255), not clipped or wrapped.
    deep = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(convert(grey_dataset, deep.astype(np.uint16) * 257), deep)
    # Resizing keeps the intensity: a flat image of another size stays flat at its value.
    flat = np.full((20, 36, 1), 77, np.uint8)
    np.testing.assert_array_equal(convert(grey_dataset, flat), np.full((28, 28, 1), 77))


@pytest.mark.parametrize(
    "layout, message",
    [
        # The message's own words: pytest's tmp path holds "test" too.
        (dict(test_count=0, corrupt=()), r"/test is empty; fill or re-prepare the dataset\."),
        (dict(train_count=3, corrupt=()), r"batch_size is larger than one process's share \(3\)"),
    ],
)
def test_empty_or_small_splits_are_one_line_config_errors(tmp_path, layout, message):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.dataset = make_folder(str(tmp_path), **layout)
    config.image_size = 16
    config.batch_size = 8
    with pytest.raises(train.ConfigError, match=message) as error:
        train.validate_config(config, device_count=8)
    assert "\n" not in str(error.value)


def test_odd_files_in_a_resized_folder_are_converted_or_skipped_and_counted(tmp_path):
    from PIL import Image

    folder = tmp_path / "train" / "a"
    os.makedirs(folder)
    os.makedirs(tmp_path / "test" / "a")
    rng = np.random.default_rng(2)
    good = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for index in range(4):
        write_image(str(folder / f"good{index}.jpg"), good)
    write_image(str(tmp_path / "test" / "a" / "t.jpg"), good)
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    write_image(str(folder / "deep.png"), (good.astype(np.uint16) * 257))  # 16-bit PNG
    write_image(str(folder / "dot.png"), good[:1, :1])  # 1 x 1
    with open(folder / "good0.jpg", "rb") as f:
        whole = f.read()
    with open(folder / "truncated.jpg", "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(folder / "notes.png", "wb") as f:
        f.write(b"not an image at all\n" * 20)
    dataset = images.describe(f"folder:{tmp_path}", image_size=16)
    batches = images.train_batches(dataset, local_batch_size=1, seed=0, shuffle_buffer=64)
    seen = [next(batches)["image"] for _ in range(8)]  # 7 convertible images, then a new epoch
    for image in seen:
        assert image.shape == (1, 2, 16, 16, 3) and image.dtype == np.uint8
    # The CMYK, 16-bit and 1 x 1 images are converted; the truncated JPEG and the text file
    # are skipped and counted.
    assert batches.skipped_examples == 2
