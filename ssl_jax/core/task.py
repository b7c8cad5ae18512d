"""What a kind of data (a modality: images, text) provides to the trainer, evaluation and report.

A method names its modality (``MODALITY`` in its module); ``ssl_jax.tasks`` maps that name to
the ``Task`` here. The trainer, linear evaluation, the report and the export ask the task, never
which kind of data they run on: adding a method touches its own module and config only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np


class Monitor(Protocol):
    """The evaluation a pretraining run reports as it goes (kNN, held-out masked accuracy)."""

    def baselines(self) -> dict[str, float]:
        """What the representation is compared with (raw pixels, the most frequent token)."""

    def __call__(self, method: Any, state: Any) -> dict[str, float]:
        """The scores of ``state``'s weights."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset as the trainer sees it.

    Attributes:
      steps_per_epoch: ``() -> global batches per pass over the training split``; a call, since
        for text it costs a tokenisation pass that runs of fixed length skip.
      image_size: side of the images (None for text), for the augmentations.
      sample_batch: a host batch of the right shapes and dtypes, for ``Method.init``.
      batches: ``start_step -> iterator`` of this process's host batches from that step on.
      monitor: ``(mesh, workdir) -> Monitor``.
      num_classes: label count of labelled data (for the online probe), else None.
    """

    steps_per_epoch: Callable[[], int]
    image_size: int | None
    sample_batch: dict[str, np.ndarray]
    batches: Callable[[int], Iterator[dict[str, np.ndarray]]]
    monitor: Callable[[Any, str], Monitor]
    num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One modality's data, evaluation and read-back, as pure functions of a config.

    Attributes:
      name: "image" or "text"; a method module's ``MODALITY``.
      claims: ``dataset name -> bool``: whether the name is one of this modality's datasets.
      dataset_hint: appended to "method X trains on <modality>" when a config names another
        modality's dataset (": use one of ...", or "").
      problem: ``config -> None or one line`` on why the data cannot be read now (before any
        compile or write).
      source: ``(config, local batch size) -> Source`` of a config ``problem`` passed.
      describe: ``config -> dataset`` (``ImageDataset`` / ``TextDataset``) of a recorded config.
      image_size: ``dataset -> int or None``, the size a method's ``make`` takes.
      sample_batch: ``(config, dataset, rows) -> host batch`` for ``Method.init``.
      read_back_problem: ``config -> None or one line``: what a finished run's read-back lacks
        (a text run's vocab), said before a checkpoint restore could fail on it.
      linear_eval: ``(config, encoder, mesh=, output_dir=, batch_size=) -> results``: the
        frozen-feature evaluation of ``python -m ssl_jax.linear_eval``.
      plots: ``() -> {name: RunReader -> Figure}``, the report's pictures beside the training
        curves (a call: drawing imports matplotlib).
      export_encoder: ``Pretrained -> (variables, metadata, extra files)`` of the encoder alone.
      fields: the config fields every run of this modality reads, each with its
        ``core.fields.Rule`` (``ssl_jax.config_checks`` applies them).
    """

    name: str
    claims: Callable[[str], bool]
    dataset_hint: str
    problem: Callable[[Any], str | None]
    source: Callable[[Any, int], Source]
    describe: Callable[[Any], Any]
    image_size: Callable[[Any], int | None]
    sample_batch: Callable[[Any, Any, int], dict[str, np.ndarray]]
    read_back_problem: Callable[[Any], str | None]
    linear_eval: Callable[..., dict[str, float]]
    plots: Callable[[], Mapping[str, Callable[[Any], Any]]]
    export_encoder: Callable[[Any], tuple[dict[str, Any], dict[str, Any], dict[str, str]]]
    fields: Mapping[str, Any]
