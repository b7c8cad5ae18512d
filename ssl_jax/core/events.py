"""Scalars back from the clu event files of a workdir (local or on an object store)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from absl import logging

from ssl_jax.core import storage

Series = tuple[np.ndarray, np.ndarray]  # (steps, values), by step


def read_scalars(workdir: str) -> dict[str, Series]:
    """Every scalar tag of the clu event files in ``workdir`` as (steps, values), by step.

    A resumed run logs again the steps after its last checkpoint: the newest write of a step wins.
    """
    files = sorted(storage.path(workdir).glob("events.out.tfevents.*"))
    if storage.is_remote(workdir):
        # TensorFlow's reader reaches object stores only through its own client (no emulator).
        with tempfile.TemporaryDirectory(prefix="ssl_jax_events_") as local:
            return _read_event_files(storage.download(files, local))
    return _read_event_files([os.fspath(path) for path in files])


def _read_event_files(paths: list[str]) -> dict[str, Series]:
    import tensorflow as tf  # its reader: the trainer and the notebook API run without TensorFlow

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
