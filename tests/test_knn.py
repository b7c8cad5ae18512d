"""Weighted kNN against a direct NumPy implementation of the same rule."""

import numpy as np

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
