"""What the trainer needs from a dataset, for images and text alike: checks, batches, evaluation.

The dataset's name decides its kind: a text corpus (``ssl_jax.text.data.DATASETS``) or images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from ssl_jax.text import data as text
from ssl_jax.vision import data as images


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset as the trainer sees it.

    Attributes:
      steps_per_epoch: ``() -> global batches per pass over the training split``; a call, since
        for text it costs a tokenisation pass that runs of fixed length skip.
      image_size: side of the images (None for text), for the augmentations.
      sample_batch: a host batch of the right shapes and dtypes, for ``Method.init``.
      batches: ``start_step -> iterator`` of this process's host batches from that step on.
      monitor: ``(mesh, workdir) -> monitor`` with ``baselines()`` and ``(method, state)``.
      num_classes: label count of labelled image data (for the online probe), else None.
    """

    steps_per_epoch: Callable[[], int]
    image_size: int | None
    sample_batch: dict[str, np.ndarray]
    batches: Callable[[int], Iterator[dict[str, np.ndarray]]]
    monitor: Callable[[Any, str], Any]
    num_classes: int | None = None


def is_text(config: ml_collections.ConfigDict) -> bool:
    return config.dataset.split("/")[0] in text.DATASETS


def problem(config: ml_collections.ConfigDict) -> str | None:
    """One line on why ``config``'s dataset cannot be read now, or None."""
    try:
        if is_text(config):
            text.describe_config(config)
            return text.missing_data_message(
                config.dataset, config.data_dir, vocab_path=config.text.vocab_path,
                vocab_size=config.text.vocab_size, lower_case=config.text.lower_case,
            )  # fmt: skip
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


def build(config: ml_collections.ConfigDict, local_batch_size: int) -> Source:
    """The ``Source`` of a validated config (see ``problem``)."""
    position = dict(
        local_batch_size=local_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        shuffle_buffer=config.shuffle_buffer,
        data_dir=config.data_dir,
    )
    if is_text(config):
        dataset = text.describe_config(config)
        length = config.text.max_seq_len
        count = functools.partial(
            text.num_sequences, dataset, dataset.train_split, max_seq_len=length,
            process_index=jax.process_index(), process_count=jax.process_count(),
            data_dir=config.data_dir,
        )  # fmt: skip
        from ssl_jax.text.evaluation import MlmMonitor

        return Source(
            steps_per_epoch=lambda: max(1, count() // local_batch_size),
            image_size=None,
            sample_batch={"token_ids": np.zeros((local_batch_size, length), np.int32)},
            batches=lambda start: text.train_batches(
                dataset, max_seq_len=length, start_step=start, nsp=config.text.nsp, **position
            ),
            monitor=lambda mesh, workdir: _TextMonitor(MlmMonitor(config, dataset, mesh)),
        )
    dataset = images.describe(config.dataset, config.get("image_size"), config.data_dir)
    examples = images.num_examples(dataset, dataset.train_split, config.data_dir)
    shape = (local_batch_size, dataset.image_size, dataset.image_size, dataset.channels)
    from ssl_jax.vision.monitor import KnnMonitor

    return Source(
        steps_per_epoch=lambda: max(1, examples // config.batch_size),
        image_size=dataset.image_size,
        sample_batch={"image": np.zeros(shape, np.uint8)},
        batches=functools.partial(
            _image_batches,
            dataset,
            config.cache_dataset,
            {**position, "crop_scale": tuple(config.augment.crop_scale)},
        ),
        monitor=lambda mesh, workdir: KnnMonitor(config, dataset, mesh, workdir),
        num_classes=dataset.num_classes,
    )


def _image_batches(dataset, cache: bool, position: dict[str, Any], start_step: int):
    return images.train_batches(dataset, start_step=start_step, cache=cache, **position)


class _TextMonitor:
    """Held-out masked accuracy and perplexity, beside the most-frequent-token baseline."""

    def __init__(self, monitor):
        self._monitor = monitor

    def baselines(self) -> dict[str, float]:
        return {"eval_most_frequent_token_accuracy": float(self._monitor.baseline)}

    def __call__(self, method, state) -> dict[str, float]:
        return self._monitor(method, state)
