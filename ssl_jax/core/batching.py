"""Host batches of either modality: the shuffle seed of an epoch, and the last, short batch padded
to the compiled shape (one compile whatever a split's size)."""

from __future__ import annotations

import numpy as np


def pad_rows(array: np.ndarray, rows: int, fill=0) -> np.ndarray:
    """``array`` [n, ...] with ``rows - n`` rows of ``fill`` appended (n <= rows).

    >>> pad_rows(np.array([[1, 2]]), 3, fill=-1).tolist()
    [[1, 2], [-1, -1], [-1, -1]]
    """
    array = np.asarray(array)
    if len(array) > rows:
        raise ValueError(f"pad_rows: {len(array)} rows do not fit in {rows}.")
    if len(array) == rows:
        return array
    padded = np.full((rows, *array.shape[1:]), fill, array.dtype)
    padded[: len(array)] = array
    return padded


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible shuffle seed for each (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
