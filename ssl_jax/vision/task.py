"""The image modality: tfds and ``folder:`` datasets, the kNN monitor, linear probes, plots."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.task import Source, Task
from ssl_jax.vision import data as images
from ssl_jax.vision import fields


def problem(config) -> str | None:
    """One line on why ``config``'s images cannot be read now (or would not fit), or None."""
    try:
        dataset = images.describe(config.dataset, config.get("image_size"), config.data_dir)
    except ValueError as error:
        return str(error)
    knn = config.get("knn") or {}
    return (
        images.missing_data_message(config.dataset, config.data_dir)
        or images.split_problem(
            dataset, config.batch_size // jax.process_count(), jax.process_count(), config.data_dir
        )
        or images.memory_problem(
            dataset,
            cache=config.cache_dataset,
            max_memory_examples=knn.get("max_memory_examples"),
            max_test_examples=knn.get("max_test_examples"),
            process_count=jax.process_count(),
            data_dir=config.data_dir,
        )
    )


def describe(config) -> images.ImageDataset:
    return images.describe(config.dataset, config.get("image_size"), config.data_dir)


def sample_batch(config, dataset: images.ImageDataset, rows: int) -> dict[str, np.ndarray]:
    del config
    shape = (rows, dataset.image_size, dataset.image_size, dataset.channels)
    return {"image": np.zeros(shape, np.uint8)}


def source(config, local_batch_size: int) -> Source:
    """The ``Source`` of a config ``problem`` passed."""
    from ssl_jax.vision.monitor import KnnMonitor  # the monitor imports the evaluation stack

    dataset = describe(config)
    examples = images.num_examples(dataset, dataset.train_split, config.data_dir)
    position = dict(
        local_batch_size=local_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        shuffle_buffer=config.shuffle_buffer,
        data_dir=config.data_dir,
        crop_scale=tuple(config.augment.crop_scale),
    )
    return Source(
        steps_per_epoch=lambda: max(1, examples // config.batch_size),
        image_size=dataset.image_size,
        sample_batch=sample_batch(config, dataset, local_batch_size),
        batches=functools.partial(_batches, dataset, config.cache_dataset, position),
        monitor=lambda mesh, workdir: KnnMonitor(config, dataset, mesh, workdir),
        num_classes=dataset.num_classes,
    )


def _batches(dataset, cache: bool, position: dict[str, Any], start_step: int):
    return images.train_batches(dataset, start_step=start_step, cache=cache, **position)


def export_encoder(run) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(variables, metadata, extra files) of the backbone inside a loaded image run."""
    from ssl_jax.models.interop import exported

    config = run.config
    # Every image method nests its backbone as the submodule named "encoder".
    variables = {
        "params": run.variables["params"]["encoder"],
        "batch_stats": run.variables["batch_stats"].get("encoder", {}),
    }
    metadata = {
        "kind": "image",
        "model": config.model.to_dict(),
        "dtype": config.get("dtype", "float32"),
        "input": {
            "image_size": run.dataset.image_size,
            "channels": run.dataset.channels,
            "pixels": "uint8, divided by 255 inside the encoder's apply",
        },
    }
    module = exported.build_module(metadata)
    size, channels = run.dataset.image_size, run.dataset.channels
    sample = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    features = jax.eval_shape(lambda v, x: module.apply(v, x, train=False)[0], variables, sample)
    metadata["feature_dim"] = int(features.shape[-1])
    return variables, metadata, {}


def _linear_eval(*args, **kwargs):
    from ssl_jax.vision import linear

    return linear.linear_probes(*args, **kwargs)


def plots() -> dict:
    from ssl_jax.vision import report  # matplotlib, on first use

    return report.PLOTS


TASK = Task(
    name="image",
    # Every name text does not claim: tfds image datasets and folder:PATH.
    claims=lambda name: True,
    dataset_hint="",
    problem=problem,
    source=source,
    describe=describe,
    image_size=lambda dataset: dataset.image_size,
    sample_batch=sample_batch,
    read_back_problem=lambda config: None,
    linear_eval=_linear_eval,
    plots=plots,
    export_encoder=export_encoder,
    fields=fields.IMAGE,
)
