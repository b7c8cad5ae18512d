"""Fashion-MNIST pipeline on the real data: restored gzip files, order, resume, process slices."""

import dataclasses
import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax.data import prepare
from ssl_jax.vision import data as images

needs_fashion_mnist = pytest.mark.skipif(
    images.missing_data_message("fashion_mnist") is not None,
    reason="Fashion-MNIST is not prepared: apt-get install dataset-fashion-mnist && "
    "python -m ssl_jax.data.prepare fashion_mnist (.ci/run does both)",
)


@pytest.mark.skipif(
    not os.path.isdir(prepare.DEBIAN_FASHION_MNIST_DIR), reason="dataset-fashion-mnist absent"
)
def test_restored_gzip_files_match_tfds_checksums(tmp_path):
    checksums_file = os.path.join(
        os.path.dirname(tfds.__file__), "url_checksums", "fashion_mnist.txt"
    )
    expected = {}
    for line in open(checksums_file):
        url, _, sha256, _ = line.split("\t")
        expected[os.path.basename(url)] = sha256
    for name, sha256 in expected.items():
        restored = tmp_path / name
        prepare.restore_upstream_gzip(
            os.path.join(prepare.DEBIAN_FASHION_MNIST_DIR, name), restored
        )
        assert hashlib.sha256(restored.read_bytes()).hexdigest() == sha256, name


@needs_fashion_mnist
def test_train_order_is_reproducible_and_resumes_mid_stream():
    # The 10,000-image test split stands in for the train split: epochs come six times sooner.
    dataset = dataclasses.replace(images.describe("fashion_mnist"), train_split="test")
    kwargs = dict(local_batch_size=500, seed=3, cache=False, shuffle_buffer=10_000)
    stream = images.train_batches(dataset, **kwargs)
    first_run = [next(stream)["image"] for _ in range(22)]  # 20 steps per epoch: crosses one
    assert first_run[0].shape == (500, 28, 28, 1) and first_run[0].dtype == np.uint8
    assert not np.array_equal(first_run[0], first_run[20])  # a new epoch is a new order
    resumed = images.train_batches(dataset, start_step=19, **kwargs)
    for expected in first_run[19:22]:
        np.testing.assert_array_equal(next(resumed)["image"], expected)
    other_seed = images.train_batches(dataset, **{**kwargs, "seed": 4})
    assert not np.array_equal(next(other_seed)["image"], first_run[0])


@needs_fashion_mnist
def test_processes_read_disjoint_halves():
    dataset = images.describe("fashion_mnist")
    full_images, full_labels = images.load_split(dataset, "test")
    halves = [
        images.load_split(dataset, "test", process_index=i, process_count=2) for i in range(2)
    ]
    assert full_images.shape == (10_000, 28, 28, 1)
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), full_images)
    np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), full_labels)
    assert np.bincount(full_labels).tolist() == [1000] * 10


def test_unknown_dataset_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'"):
        images.describe("cifar11")


@needs_fashion_mnist
def test_image_source_counts_steps_and_shapes_its_sample_batch():
    from configs import simclr_fashion_mnist
    from ssl_jax import tasks

    config = simclr_fashion_mnist.get_config()
    source = tasks.of_method(config.method).source(config, 32)
    assert source.steps_per_epoch() == 60_000 // config.batch_size
    assert source.image_size == 28
    assert source.sample_batch["image"].shape == (32, 28, 28, 1)
    first = next(source.batches(0))
    assert first["image"].shape == (32, 28, 28, 1) and first["label"].shape == (32,)
