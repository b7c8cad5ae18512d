"""Weighted kNN against a direct NumPy implementation of the same rule, on one device and with
the bank split over eight."""

import jax
import numpy as np
import pytest

from ssl_jax.core import parallel
from ssl_jax.evaluation import knn


def numpy_knn(bank, bank_labels, queries, num_classes, k, temperature):
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    predictions = []
    for query in queries:
        similarity = bank @ query
        nearest = np.argsort(-similarity, kind="stable")[:k]
        votes = np.zeros(num_classes)
        np.add.at(votes, bank_labels[nearest], np.exp(similarity[nearest] / temperature))
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def test_knn_matches_numpy():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 2
    bank_labels = rng.integers(0, 5, 300)
    bank = centres[bank_labels] + rng.normal(size=(300, 16))
    query_labels = rng.integers(0, 5, 70)
    queries = centres[query_labels] + rng.normal(size=(70, 16))
    got = knn.knn_predict(
        bank, bank_labels, queries, num_classes=5, k=20, temperature=0.1, query_chunk=32
    )
    want = numpy_knn(bank, bank_labels, queries, 5, 20, 0.1)
    np.testing.assert_array_equal(got, want)
    accuracy = knn.knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=5, k=20)
    assert accuracy == np.mean(want == query_labels) and accuracy > 0.8


@pytest.mark.parametrize("devices", [1, 8])
def test_bank_split_over_devices_matches_numpy(devices):
    # Random labels: every prediction depends on exactly which k rows are the nearest, so a
    # shard that votes with its own nearest rows (no global merge) gets many of them wrong.
    # 203 rows: the last device's shard is padded.
    rng = np.random.default_rng(1)
    bank, bank_labels = rng.normal(size=(203, 8)), rng.integers(0, 4, 203)
    queries = rng.normal(size=(40, 8))
    mesh = parallel.make_mesh(jax.devices()[:devices])
    got = knn.knn_predict(
        bank, bank_labels, queries, num_classes=4, k=15, temperature=0.5, mesh=mesh
    )
    np.testing.assert_array_equal(got, numpy_knn(bank, bank_labels, queries, 4, 15, 0.5))
