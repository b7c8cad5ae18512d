"""Image input pipelines on tfds: each process reads its own slice, yields host-local uint8 batches.

The order is a function of (seed, epoch), so a run resumed at step s sees the batches an
uninterrupted run would have seen from step s on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

# TensorFlow is only the input pipeline here: it must leave accelerators to JAX.
tf.config.set_visible_devices([], "GPU")

FOLDER_PREFIX = "folder:"


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """What the trainer needs to know about a dataset.

    Attributes:
      name: tfds name, or ``folder:PATH``.
      num_classes: label count, used by kNN and linear evaluation.
      image_size: side of the square uint8 images the pipeline yields.
      channels: 1 (grey) or 3.
      train_split: split read for pretraining (may be unlabelled).
      memory_split: labelled split whose features form the kNN memory bank.
      test_split: labelled split evaluated against the memory bank.
      fixed_size: True when every stored image already has ``image_size``; otherwise the host
        resizes the shorter side and centre-crops.
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    train_split: str = "train"
    memory_split: str = "train"
    test_split: str = "test"
    fixed_size: bool = True


DATASETS = {
    "fashion_mnist": ImageDataset("fashion_mnist", 10, 28, 1),
    "mnist": ImageDataset("mnist", 10, 28, 1),
    "cifar10": ImageDataset("cifar10", 10, 32, 3),
    "cifar100": ImageDataset("cifar100", 100, 32, 3),
    "stl10": ImageDataset("stl10", 10, 96, 3, train_split="train+unlabelled"),
    "imagenet2012": ImageDataset(
        "imagenet2012", 1000, 224, 3, test_split="validation", fixed_size=False
    ),
}

INSTALL_HINTS = {
    "fashion_mnist": "apt-get install -y dataset-fashion-mnist && "
    "python -m ssl_jax.data.prepare fashion_mnist",
    "imagenet2012": "place ILSVRC2012_img_{train,val}.tar in ~/tensorflow_datasets/downloads/manual"
    " and run python -m ssl_jax.data.prepare imagenet2012",
}


def builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The tfds builder behind ``name`` (``folder:PATH`` → ``tfds.ImageFolder``)."""
    if name.startswith(FOLDER_PREFIX):
        return tfds.ImageFolder(name[len(FOLDER_PREFIX) :])
    return tfds.builder(name, data_dir=data_dir)


def describe(name: str, image_size: int | None = None, data_dir: str | None = None) -> ImageDataset:
    """The ``ImageDataset`` for a tfds name or ``folder:PATH``; ``image_size`` overrides the side.

    Raises:
      ValueError: unknown name, or a folder without the ``train``/``test`` class-folder layout.

    >>> dataset = describe("cifar10")
    >>> dataset.image_size, dataset.channels, dataset.num_classes, dataset.test_split
    (32, 3, 10, 'test')
    """
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not os.path.isdir(path):
            raise ValueError(f"dataset {name!r}: folder {path!r} does not exist.")
        info = builder(name).info
        splits = set(info.splits.keys())
        if not {"train", "test"} <= splits:
            raise ValueError(
                f"dataset {name!r}: expected {path}/train/<class>/*.jpg and {path}/test/<class>/*;"
                f" found splits {sorted(splits)}."
            )
        return ImageDataset(
            name, info.features["label"].num_classes, image_size or 224, 3, fixed_size=False
        )
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}: use one of {known} or folder:PATH.")
    dataset = DATASETS[name]
    if image_size and image_size != dataset.image_size:
        dataset = dataclasses.replace(dataset, image_size=image_size, fixed_size=False)
    return dataset


def missing_data_message(name: str, data_dir: str | None = None) -> str | None:
    """None when ``name`` can be read now; otherwise one line saying how to make it readable."""
    if name.startswith(FOLDER_PREFIX):
        return None
    if builder(name, data_dir).is_prepared():
        return None
    hint = INSTALL_HINTS.get(name, f"python -m ssl_jax.data.prepare {name}")
    return f"dataset {name!r} is not prepared in the tfds data dir; run: {hint}"


def split_problem(
    dataset: ImageDataset, local_batch_size: int, process_count: int, data_dir: str | None = None
) -> str | None:
    """One line on why the splits of a prepared dataset cannot feed a run, or None."""
    for split in dict.fromkeys((dataset.train_split, dataset.memory_split, dataset.test_split)):
        if num_examples(dataset, split, data_dir) == 0:
            return f"{dataset.name}/{split} is empty; fill or re-prepare the dataset."
    share = num_examples(dataset, dataset.train_split, data_dir) // process_count
    if share < local_batch_size:
        return (
            f"batch_size is larger than one process's share ({share}) of {dataset.name}/"
            f"{dataset.train_split}; lower --config.batch_size."
        )
    return None


def _resize_and_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Shorter side to ``size``, centre crop: fixed shapes for the on-device augmentation."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new_shape = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _preprocess(dataset: ImageDataset):
    """Decodes stored bytes to ``dataset.channels`` and brings every image to the dataset's size.

    Decoding here rather than in tfds lets a grey image in a colour dataset (or the reverse) be
    converted, an image of another size be resized, and undecodable bytes fail this element only,
    which the pipeline then skips and counts.
    """
    size = dataset.image_size

    def fn(example):
        image = tf.io.decode_image(
            example["image"], channels=dataset.channels, expand_animations=False
        )
        if dataset.fixed_size:
            stored = tf.shape(image)[:2]
            image = tf.cond(
                tf.reduce_all(stored == size),
                lambda: image,
                lambda: _resize_and_crop(image, size),
            )
        else:
            image = _resize_and_crop(image, size)
        image = tf.ensure_shape(image, [size, size, dataset.channels])
        label = example.get("label", tf.constant(-1, tf.int64))
        return {"image": image, "label": tf.cast(label, tf.int32)}

    return fn


def _read(
    dataset: ImageDataset,
    split: str,
    data_dir: str | None,
    process_index: int,
    process_count: int,
    max_examples: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """This process's examples of ``split``, decoded, undecodable ones dropped; the stored count.

    ``max_examples`` takes the first examples of the split before it is divided among processes.
    """
    source = builder(dataset.name, data_dir)
    read = dict(
        shuffle_files=False,
        read_config=tfds.ReadConfig(options=_options()),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    if dataset.name.startswith(FOLDER_PREFIX):
        # tfds.ImageFolder reads whole splits only: slice and divide here instead.
        raw = source.as_dataset(split=split, **read)
        if max_examples:
            raw = raw.take(max_examples)
        share = int(raw.cardinality()) // process_count
        raw = raw.take(share * process_count).shard(process_count, process_index)
    else:
        if max_examples:
            split = f"{split}[:{max_examples}]"
        split = tfds.split_for_jax_process(
            split, process_index=process_index, process_count=process_count, drop_remainder=True
        )
        raw = source.as_dataset(split=split, **read)
    decoded = raw.map(_preprocess(dataset), num_parallel_calls=tf.data.AUTOTUNE)
    return decoded.ignore_errors(log_warning=False), int(raw.cardinality())


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = max(2, min(os.cpu_count() or 2, 16))
    return options


def num_examples(dataset: ImageDataset, split: str, data_dir: str | None = None) -> int:
    return builder(dataset.name, data_dir).info.splits[split].num_examples


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible shuffle seed for each (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train_batches(
    dataset: ImageDataset,
    *,
    local_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 50_000,
    cache: bool = True,
    data_dir: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local batches ``{"image": uint8 [b, S, S, C], "label": int32 [b]}``.

    Epoch e is this process's slice of the train split in an order fixed by (seed, e), cut into
    full batches; iteration starts at ``start_step`` batches in, so a resumed run continues with
    exactly the batches an uninterrupted run would have seen.
    """
    steps_per_epoch = num_examples(dataset, dataset.train_split, data_dir) // process_count
    steps_per_epoch //= local_batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size is larger than one process's share of {dataset.name}/"
            f"{dataset.train_split}; lower batch_size."
        )
    base, stored = _read(dataset, dataset.train_split, data_dir, process_index, process_count)
    if cache:
        base = base.cache()
    return _TrainBatches(
        base, stored, local_batch_size, steps_per_epoch, seed, start_step, shuffle_buffer
    )


class _TrainBatches:
    """The endless batch iterator; counts the examples its pipeline could not decode.

    Attributes:
      skipped_examples: examples of this process's split that failed to decode, known from the
        end of the first pass on (the same ones fail in every pass).
    """

    def __init__(self, base, stored, local_batch_size, steps_per_epoch, seed, start_step, buffer):
        self._base, self._stored, self._batch = base, stored, local_batch_size
        self._seed, self._buffer = seed, buffer
        self._epoch, self._offset = divmod(start_step, steps_per_epoch)
        self.skipped_examples = 0
        self._batches = self._epoch_batches()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._batches)

    def _epoch_batches(self):
        while True:
            ordered = self._base.shuffle(self._buffer, seed=epoch_seed(self._seed, self._epoch))
            # The partial last batch is read and dropped here, so that every example is counted.
            batches = ordered.batch(self._batch).skip(self._offset)
            decoded = self._offset * self._batch
            for batch in batches.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
                decoded += len(batch["label"])
                if len(batch["label"]) == self._batch:
                    yield batch
            skipped = self._stored - decoded
            if skipped > 0 and skipped != self.skipped_examples:
                logging.warning(
                    "skipped %d of %d images that could not be decoded", skipped, self._stored
                )
            self.skipped_examples = max(skipped, 0)
            self._epoch, self._offset = self._epoch + 1, 0


def load_split(
    dataset: ImageDataset,
    split: str,
    *,
    max_examples: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """This process's slice of a labelled split in stored order: (uint8 images, int32 labels)."""
    ds, stored = _read(dataset, split, data_dir, process_index, process_count, max_examples)
    images, labels = [], []
    for batch in ds.batch(4096).as_numpy_iterator():
        images.append(batch["image"])
        labels.append(batch["label"])
    if not images:
        raise ValueError(
            f"{dataset.name}/{split} has no readable images; check the dataset or choose another "
            "split."
        )
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(images) < stored:
        logging.warning(
            "%s/%s: skipped %d of %d images that could not be decoded",
            dataset.name, split, stored - len(images), stored,
        )  # fmt: skip
    return images, labels
