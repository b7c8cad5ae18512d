"""Linear evaluation of an image run: softmax probes on frozen features, beside references.

The encoder's features (and, as asked, those of its random initialisation and raw downsampled
pixels) train ``evaluation.classifier``'s probe; features are cached per checkpoint and split.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from ssl_jax.core import storage
from ssl_jax.evaluation import classifier, linear, pretrained
from ssl_jax.vision import data as images
from ssl_jax.vision import monitor


def linear_probes(
    config: ml_collections.ConfigDict,
    encoder: pretrained.Pretrained,
    *,
    mesh: jax.sharding.Mesh,
    output_dir: str,
    batch_size: int,
) -> dict[str, float]:
    """Linear top-1/top-5 of an image run's encoder, its random init and raw pixels, as asked."""
    workdir = encoder.workdir
    dataset = encoder.dataset
    data_dir = config.data_dir or encoder.config.get("data_dir")
    missing = images.missing_data_message(dataset.name, data_dir)
    if missing:
        raise linear.LinearEvalError(missing)
    if jax.process_index() == 0:
        storage.makedirs(output_dir)

    splits = {"train": (dataset.memory_split, config.max_train_examples),
              "test": (dataset.test_split, config.max_test_examples)}  # fmt: skip

    def stream(name: str, pixel_size: int | None = None) -> images.SplitStream:
        # Images are read a batch at a time: memory holds features, never a split's pixels.
        split, limit = splits[name]
        return images.SplitStream(
            dataset, split, batch_size=batch_size // jax.process_count(), max_examples=limit,
            process_index=jax.process_index(), process_count=jax.process_count(),
            data_dir=data_dir, pixel_size=pixel_size, cache_bytes=0,
        )  # fmt: skip

    def load_images(name: str) -> tuple[images.SplitStream, None]:
        return stream(name), None

    def count(name: str) -> int:
        split, limit = splits[name]
        total = images.num_examples(dataset, split, data_dir)
        total = min(total, limit) if limit else total
        return total // jax.process_count() * jax.process_count()  # per-process slices are equal

    encoders = {"": encoder}
    if config.compare_random_init:
        encoders["_random_init"] = pretrained.load(workdir, random_init=True)
    results: dict[str, float] = {}
    for suffix, model in encoders.items():
        extract = functools.partial(
            linear.cached_features, model, mesh=mesh, cache_dir=output_dir, batch_size=batch_size
        )
        train, test = (
            extract(splits[name][0], count(name), functools.partial(load_images, name))
            for name in ("train", "test")
        )
        scores = classifier.fit_and_score(train, test, config, dataset.num_classes, mesh=mesh)
        results.update({f"linear_top1{suffix}": scores[1], f"linear_top5{suffix}": scores[5]})
    if config.compare_pixels:
        # Every process's (downsampled) images, so all fit the same classifier.
        train, test = (
            _scaled(monitor.pixel_rows(stream(name, images.PIXEL_BASELINE_SIZE)))
            for name in ("train", "test")
        )
        scores = classifier.fit_and_score(train, test, config, dataset.num_classes, mesh=mesh)
        results.update({"linear_top1_pixels": scores[1], "linear_top5_pixels": scores[5]})
    return results


def _scaled(rows: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = rows
    return pixels / np.float32(255.0), labels
