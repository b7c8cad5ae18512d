"""The evaluation a pretraining run reports as it goes: kNN top-1 against the raw-pixel baseline.

Called by the trainer at the start, every ``eval_every_steps`` and at the end. Images are
streamed batch by batch; only feature rows (and the baseline's downsampled pixels) are held.
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax.core import storage
from ssl_jax.core.method import Method
from ssl_jax.evaluation import features, knn
from ssl_jax.vision import data as images


def pixel_rows(stream: images.SplitStream) -> tuple[np.ndarray, np.ndarray]:
    """Every process's images of ``stream`` as float32 rows of 0..255 values, and their labels.

    Gathered in process order, so every process holds (and scores) the same whole split.
    """
    rows = [(x.reshape(len(x), -1).astype(np.float32), y) for x, y in stream]
    pixels = np.concatenate([x for x, _ in rows]) if rows else np.zeros((0, 1), np.float32)
    labels = np.concatenate([y for _, y in rows]) if rows else np.zeros(0, np.int32)
    gathered = multihost_utils.process_allgather((pixels, labels), tiled=True)
    return np.asarray(gathered[0], np.float32), np.asarray(gathered[1])


class KnnMonitor:
    """kNN top-1 of the test split against the memory split, and the raw-pixel baseline.

    The bank is the first ``knn.max_memory_examples`` of the memory split and the queries the
    first ``knn.max_test_examples`` of the test split (all when None). The baseline compares
    pixels downsampled to ``images.PIXEL_BASELINE_SIZE`` (datasets that small are as stored).
    """

    def __init__(self, config, dataset: images.ImageDataset, mesh, workdir: str):
        self.config, self.mesh, self.dataset = config.knn, mesh, dataset
        local_batch = self.config.batch_size // jax.process_count()
        self._stream = functools.partial(
            images.SplitStream,
            dataset,
            batch_size=local_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            data_dir=config.data_dir,
        )
        limits = self.config.max_memory_examples, self.config.max_test_examples
        self.memory, self.test = (
            self._stream(split, max_examples=limit)
            for split, limit in zip((dataset.memory_split, dataset.test_split), limits, strict=True)
        )
        self._limits = limits
        self.baseline_path = storage.path(workdir) / "knn_pixel_baseline.json"

    def _accuracy(self, bank, bank_labels, queries, query_labels) -> float:
        return knn.knn_accuracy(
            bank, bank_labels, queries, query_labels,
            num_classes=self.dataset.num_classes, k=self.config.k,
            temperature=self.config.temperature, mesh=self.mesh,
        )  # fmt: skip

    def baselines(self) -> dict[str, float]:
        """The same kNN on raw pixels (computed once per workdir)."""
        if self.baseline_path.exists():
            return {"knn_pixel_baseline": json.loads(self.baseline_path.read_text())["knn_top1"]}

        def everyone(split, limit):
            return pixel_rows(
                self._stream(
                    split, max_examples=limit, pixel_size=images.PIXEL_BASELINE_SIZE, cache_bytes=0
                )
            )

        bank = everyone(self.dataset.memory_split, self._limits[0])
        queries = everyone(self.dataset.test_split, self._limits[1])
        accuracy = self._accuracy(*bank, *queries)
        if jax.process_index() == 0:
            storage.write_atomically(self.baseline_path, json.dumps({"knn_top1": accuracy}))
        return {"knn_pixel_baseline": accuracy}

    def __call__(self, method: Method, state) -> dict[str, float]:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        extract = functools.partial(
            features.extract_features, method.encode, variables, mesh=self.mesh,
            batch_size=self.config.batch_size,
        )  # fmt: skip
        bank, bank_labels = extract(self.memory, None)
        queries, query_labels = extract(self.test, None)
        return {"knn_top1": self._accuracy(bank, bank_labels, queries, query_labels)}
