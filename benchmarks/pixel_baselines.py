"""Raw-pixel kNN baselines for an image dataset, in NumPy, independent of ssl_jax's monitor.

    python benchmarks/pixel_baselines.py [--dataset=fashion_mnist]

Prints two classifiers of the test split against the train split on raw pixels scaled to
[0, 1]: the monitor's protocol (cosine similarity, 200 neighbours, votes weighted by
exp(sim / 0.1)) and a plain 5-nearest-neighbour majority vote under L2 distance (ties go to
the nearest neighbour's class), the baseline most papers quote for Fashion-MNIST.
"""

import argparse
import time

import numpy as np


def load(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    data = tfds.as_numpy(tfds.load(dataset, split=split, batch_size=-1))
    images = data["image"].reshape(len(data["label"]), -1).astype(np.float32) / 255.0
    return images, data["label"].astype(np.int64)


def knn_predictions(train_x, train_y, test_x, num_classes, chunk=500):
    """Returns (cosine kNN200 τ=0.1 predictions, L2 5-NN majority predictions)."""
    train_unit = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    train_sq = np.sum(train_x * train_x, axis=1)
    cosine, l2 = [], []
    for start in range(0, len(test_x), chunk):
        x = test_x[start : start + chunk]
        sim = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ train_unit.T
        top = np.argpartition(-sim, 200, axis=1)[:, :200]
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / 0.1)
        votes = np.zeros((len(x), num_classes))
        np.add.at(votes, (np.arange(len(x))[:, None], train_y[top]), weights)
        cosine.append(votes.argmax(1))

        # Squared L2 up to the per-row constant |x|^2, which does not change the ranking.
        dist = train_sq[None, :] - 2.0 * (x @ train_x.T)
        near = np.argpartition(dist, 5, axis=1)[:, :5]
        near = np.take_along_axis(near, np.argsort(np.take_along_axis(dist, near, 1), 1), 1)
        labels = train_y[near]
        counts = np.stack([np.sum(labels == c, axis=1) for c in range(num_classes)], axis=1)
        best = counts.max(axis=1, keepdims=True)
        # Among the tied classes, the one that appears first in distance order wins.
        tied = counts[np.arange(len(x))[:, None], labels] == best
        l2.append(labels[np.arange(len(x)), np.argmax(tied, axis=1)])
    return np.concatenate(cosine), np.concatenate(l2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    args = parser.parse_args()
    start = time.time()
    train_x, train_y = load(args.dataset, "train")
    test_x, test_y = load(args.dataset, "test")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    cosine, l2 = knn_predictions(train_x, train_y, test_x, num_classes)
    print(
        f"{args.dataset}: {len(train_x)} train, {len(test_x)} test; raw pixels "
        f"kNN200 cosine tau=0.1 top-1 {np.mean(cosine == test_y):.4f}, "
        f"5-NN L2 majority top-1 {np.mean(l2 == test_y):.4f} ({time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
