"""A pretraining workdir read back for pictures: its config, logged scalars, checkpoint, eval text.

Each piece is read once and only when asked for; one that is not there (yet) raises ``Missing``
with what is absent.
"""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from ssl_jax.core import storage
from ssl_jax.evaluation import plots, pretrained
from ssl_jax.text import data as text
from ssl_jax.text.evaluation import frequency_baseline


class Missing(Exception):
    """A piece a plot needs is not in the workdir (yet); the message says which."""


def read_scalars(workdir: str) -> dict[str, plots.Series]:
    """Every scalar tag of the clu event files in ``workdir`` as (steps, values), by step.

    A resumed run logs again the steps after its last checkpoint: the newest write of a step wins.
    """
    files = sorted(storage.path(workdir).glob("events.out.tfevents.*"))
    if storage.is_remote(workdir):
        # TensorFlow's reader reaches object stores only through its own client (no emulator).
        with tempfile.TemporaryDirectory(prefix="ssl_jax_events_") as local:
            return _read_event_files(storage.download(files, local))
    return _read_event_files([os.fspath(path) for path in files])


def _read_event_files(paths: list[str]) -> dict[str, plots.Series]:
    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in paths:
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.HasField("tensor"):
                        number = tf.make_ndarray(value.tensor)
                        if number.ndim or not np.issubdtype(number.dtype, np.number):
                            continue  # hparams, text and images are not curves
                        number = float(number)
                    elif value.HasField("simple_value"):
                        number = value.simple_value
                    else:
                        continue
                    seen = latest.setdefault(value.tag, {})
                    if event.step not in seen or event.wall_time >= seen[event.step][0]:
                        seen[event.step] = (event.wall_time, number)
        except tf.errors.DataLossError:
            # A writer that is still running (or was killed) leaves a truncated last record.
            logging.warning("report: %s ends in a truncated record; read what precedes it", path)
    return {
        tag: (np.array(sorted(by_step)), np.array([by_step[s][1] for s in sorted(by_step)]))
        for tag, by_step in latest.items()
    }


class RunReader:
    """The workdir's pieces, each read once and only when a plot asks for it."""

    def __init__(self, workdir: str, *, embedding: str, max_embedding_examples: int):
        self.workdir = workdir
        self.config = pretrained.read_config(workdir)
        self.scalars = read_scalars(workdir)
        self.embedding, self.max_embedding_examples = embedding, max_embedding_examples

    @functools.cached_property
    def pretrained(self) -> pretrained.Pretrained:
        if jax.process_count() > 1:
            # Orbax restores collectively: process 0 alone would wait for the others forever.
            raise Missing(
                "the checkpoint is read by all processes together; run "
                f"python -m ssl_jax.report --workdir={self.workdir} once the run has ended"
            )
        try:
            return pretrained.load(self.workdir)
        except FileNotFoundError as error:
            raise Missing(str(error)) from None

    @functools.cached_property
    def text_eval(self) -> tuple:
        """(vocab, held-out sequences as the monitor reads them, most-frequent-token accuracy)."""
        dataset = text.describe_config(self.config)
        vocab = dataset.vocab()
        data = text.load_eval_split(
            dataset, max_seq_len=self.config.text.max_seq_len,
            max_sequences=self.config.mlm.get("max_eval_sequences"),
            data_dir=self.config.get("data_dir"), vocab=vocab,
        )  # fmt: skip
        return vocab, data, frequency_baseline(data["token_ids"], vocab.special_ids)

    def series(self, *tags: str) -> dict[str, plots.Series]:
        return {tag: self.scalars[tag] for tag in tags if tag in self.scalars}

    def last_step(self) -> int:
        return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)

    def title(self) -> str:
        return f"{self.config.method} on {self.config.dataset}"
