"""Image input pipelines on tfds: each process reads its own slice, yields host-local uint8 batches.

The order is a function of (seed, epoch), so a run resumed at step s sees the batches an
uninterrupted run would have seen from step s on.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from ssl_jax.core.batching import epoch_seed

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
      fixed_size: True when every stored image already has ``image_size`` (small datasets:
        the device crops the whole stored image). Otherwise the host samples each view's crop
        from the decoded full image (``train_batches`` yields [b, 2, S, S, C]) and evaluation
        resizes the shorter side to S / 0.875 and centre-crops S.
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    train_split: str = "train"
    memory_split: str = "train"
    test_split: str = "test"
    fixed_size: bool = True

    @property
    def host_crops(self) -> bool:
        """Whether training crops are cut on the host from the full image (see ``fixed_size``)."""
        return not self.fixed_size


# Evaluation of resized datasets: shorter side to S / 0.875 (256 for 224), centre crop S, as in
# the SimCLR, MoCo and torchvision ImageNet references.
EVAL_CROP_FRACTION = 0.875
# Side of the downsampled images the raw-pixel baselines (kNN, linear) compare: bounded memory
# per example whatever the dataset's size; Fashion-MNIST (28) and CIFAR (32) are left as stored.
PIXEL_BASELINE_SIZE = 32
# Side a folder: dataset of mixed or non-square sizes is brought to when image_size is not given.
DEFAULT_FOLDER_SIZE = 224
# How many files of a folder: dataset's train split are decoded to infer its size and channels.
_FOLDER_SAMPLE = 32
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


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
        size, channels, fixed = _infer_folder_shape(path, image_size)
        return ImageDataset(
            name, info.features["label"].num_classes, size, channels, fixed_size=fixed
        )
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}: use one of {known} or folder:PATH.")
    dataset = DATASETS[name]
    if image_size and image_size != dataset.image_size:
        dataset = dataclasses.replace(dataset, image_size=image_size, fixed_size=False)
    return dataset


def _folder_files(path: str, split: str = "train") -> list[str]:
    return sorted(
        f for f in glob.glob(os.path.join(path, split, "*", "*"))
        if f.lower().endswith(_IMAGE_SUFFIXES)
    )  # fmt: skip


def _infer_folder_shape(path: str, image_size: int | None) -> tuple[int, int, bool]:
    """(side, channels, fixed_size) of a folder from evenly spaced train files.

    Channels: 1 when every sampled image is grey, else 3. Side: ``image_size`` when given,
    otherwise the common side of square images of one size, otherwise ``DEFAULT_FOLDER_SIZE``.
    Files that do not decode are left out here (training skips and counts them).
    """
    files = _folder_files(path)
    step = max(1, len(files) // _FOLDER_SAMPLE)
    shapes = []
    for name in files[::step][:_FOLDER_SAMPLE]:
        try:
            with open(name, "rb") as f:
                shapes.append(tuple(tf.io.decode_image(f.read(), expand_animations=False).shape))
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, OSError):
            continue
    channels = 1 if shapes and all(shape[2] == 1 for shape in shapes) else 3
    sides = {shape[:2] for shape in shapes}
    common = next(iter(sides))[0] if len(sides) == 1 and len(set(next(iter(sides)))) == 1 else None
    if image_size:
        return image_size, channels, common == image_size
    if common:
        logging.info("folder %s: %d x %d x %d images (from %d files)", path, common, common,
                     channels, len(shapes))  # fmt: skip
        return common, channels, True
    logging.info(
        "folder %s: sampled images have %d sizes; resizing to %d px (set --config.image_size to "
        "choose)", path, len(sides), DEFAULT_FOLDER_SIZE,
    )  # fmt: skip
    return DEFAULT_FOLDER_SIZE, channels, False


def available_memory_bytes() -> int:
    """Memory this host can still give (``MemAvailable``), or physical memory where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def stored_bytes(dataset: ImageDataset, split: str, data_dir: str | None = None) -> int:
    """Bytes of the encoded images of ``split`` (what an in-memory cache of them holds)."""
    if dataset.name.startswith(FOLDER_PREFIX):
        files = _folder_files(dataset.name[len(FOLDER_PREFIX) :], split)
        return sum(os.path.getsize(f) for f in files)
    info = builder(dataset.name, data_dir).info
    return int(info.splits[split].num_bytes)


def memory_problem(
    dataset: ImageDataset,
    *,
    cache: bool,
    max_memory_examples: int | None = None,
    max_test_examples: int | None = None,
    feature_dim: int = 2048,
    process_count: int = 1,
    data_dir: str | None = None,
) -> str | None:
    """One line when the in-memory train cache or the evaluation bank would not fit this host.

    The train cache holds decoded images (fixed-size datasets) or encoded bytes (host crops);
    the kNN evaluation holds, per example of its memory and test splits (at most
    ``max_memory_examples`` and ``max_test_examples``), a float32 feature row (``feature_dim``:
    ResNet-50's, an upper bound for the models here) and a float32 downsampled pixel row; its
    images are streamed, never held. Half of the available
    memory is the budget, leaving room for the model, compilation and tf.data buffers.
    """
    budget = available_memory_bytes() // 2
    gib = 2**30
    if cache:
        if dataset.host_crops:
            need = stored_bytes(dataset, dataset.train_split, data_dir)
        else:
            count = num_examples(dataset, dataset.train_split, data_dir)
            need = count * dataset.image_size**2 * dataset.channels
        need //= process_count
        if need > budget:
            return (
                f"caching {dataset.name}/{dataset.train_split} in memory needs ~{need / gib:.1f}"
                f" GiB, more than half of the {2 * budget / gib:.1f} GiB this host has free; set"
                " --config.cache_dataset=False."
            )
    eval_examples = 0
    for split, limit in (
        (dataset.memory_split, max_memory_examples),
        (dataset.test_split, max_test_examples),
    ):
        count = num_examples(dataset, split, data_dir)
        eval_examples += min(limit, count) if limit else count
    pixel_side = min(dataset.image_size, PIXEL_BASELINE_SIZE)
    need = eval_examples * 4 * (feature_dim + pixel_side**2 * dataset.channels)
    if need > budget:
        return (
            f"the kNN evaluation of {eval_examples} examples needs ~{need / gib:.1f} GiB, more "
            f"than half of the {2 * budget / gib:.1f} GiB this host has free; lower "
            "--config.knn.max_memory_examples / --config.knn.max_test_examples."
        )
    return None


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


def _resize_and_crop(image: tf.Tensor, size: int, crop_fraction: float = 1.0) -> tf.Tensor:
    """Shorter side to ``size / crop_fraction``, centre crop ``size``."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size / crop_fraction) / tf.reduce_min(shape)
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
            image = _resize_and_crop(image, size, EVAL_CROP_FRACTION)
        image = tf.ensure_shape(image, [size, size, dataset.channels])
        label = example.get("label", tf.constant(-1, tf.int64))
        return {"image": image, "label": tf.cast(label, tf.int32)}

    return fn


def _crop_box(shape: tf.Tensor, uniforms: tf.Tensor, scale: Sequence[float], ratio):
    """``augment.crop.sample_crop_box``'s torchvision rule in TensorFlow, on a traced shape.

    The same ten candidates (area ``U(scale)`` of the original, log-uniform aspect), the first
    that fits, the same aspect-clamped centred fallback: host and device crops share one
    distribution. Returns int32 ``[y0, x0, h, w]``.
    """
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area_u, ratio_u, offset_u = uniforms[:10], uniforms[10:20], uniforms[20:22]
    area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(low + (high - low) * ratio_u)
    box_w, box_h = tf.round(tf.sqrt(area * aspect)), tf.round(tf.sqrt(area / aspect))
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(image_ratio < ratio[0], tf.round(width / ratio[0]), height)
    any_fits = tf.reduce_any(fits)
    h = tf.where(any_fits, box_h[first], fallback_h)
    w = tf.where(any_fits, box_w[first], fallback_w)
    y0 = tf.where(
        any_fits, tf.minimum(tf.floor(offset_u[0] * (height - h + 1)), height - h),
        tf.floor((height - h) / 2),
    )  # fmt: skip
    x0 = tf.where(
        any_fits, tf.minimum(tf.floor(offset_u[1] * (width - w + 1)), width - w),
        tf.floor((width - w) / 2),
    )  # fmt: skip
    return tf.cast(tf.stack([y0, x0, h, w]), tf.int32)


# Uniforms one host crop takes: ten areas, ten aspects, two offsets (as on the device).
_HOST_CROP_UNIFORMS = 22
_CROP_RATIO = (3 / 4, 4 / 3)


def _resize_view(crop: tf.Tensor, size: int) -> tf.Tensor:
    """A crop [h, w, C] resized to uint8 [size, size, C], antialiased wherever it shrinks.

    TensorFlow's antialiased kernel (``scale_and_translate``) costs about three bilinear
    resizes, so it is not used: a crop that grows in both directions is resized bilinearly
    (the antialiased kernel's own result when upsampling), one that shrinks in both is
    box-filtered (``area``: each output pixel the mean of the source pixels it covers, so
    nothing aliases), and one that shrinks along one axis only is box-filtered along that axis,
    then resized bilinearly along the other (both filters are separable; each pass leaves the
    other axis as it is). Against the antialiased resize of every crop: mean absolute difference
    about 0.7 of 255 (see tests/test_host_crops.py).
    """
    shape = tf.shape(crop)[:2]
    height, width = shape[0], shape[1]

    def one_axis_then_other(area_shape):
        shrunk = tf.image.resize(crop, area_shape, method="area")
        return tf.image.resize(shrunk, (size, size))

    image = tf.case(
        [
            (tf.reduce_all(shape <= size), lambda: tf.image.resize(crop, (size, size))),
            (tf.reduce_all(shape >= size),
             lambda: tf.image.resize(crop, (size, size), method="area")),
            (height > size, lambda: one_axis_then_other((size, width))),
        ],
        default=lambda: one_axis_then_other((height, size)),
    )  # fmt: skip
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _two_crops(dataset: ImageDataset, scale: Sequence[float]):
    """``(bytes, label, seed [2]) -> {"image": uint8 [2, S, S, C], "label"}``: two independent
    random resized crops of the full stored image, one per view.

    The image is decoded once, whole, and both views sliced from it: on ImageNet-size JPEGs
    that costs less CPU than two ``decode_and_crop_jpeg`` windows (which still entropy-decode
    every row above a window's bottom; see benchmarks/input_pipeline.py). Flips and colour
    augmentations stay on the device.
    """
    size, channels = dataset.image_size, dataset.channels

    def crops(encoded, label, seed):
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        views = []
        for view in (0, 1):
            uniforms = tf.random.stateless_uniform(
                [_HOST_CROP_UNIFORMS], seed + tf.constant([0, view], tf.int64)
            )
            y0, x0, h, w = tf.unstack(_crop_box(tf.shape(image), uniforms, scale, _CROP_RATIO))
            views.append(_resize_view(image[y0 : y0 + h, x0 : x0 + w], size))
        image = tf.ensure_shape(tf.stack(views), [2, size, size, channels])
        return {"image": image, "label": tf.cast(label, tf.int32)}

    return crops


def _read(
    dataset: ImageDataset,
    split: str,
    data_dir: str | None,
    process_index: int,
    process_count: int,
    max_examples: int | None = None,
    decode: bool = True,
) -> tuple[tf.data.Dataset, int]:
    """This process's examples of ``split``, decoded, undecodable ones dropped; the stored count.

    ``max_examples`` takes the first examples of the split before it is divided among processes.
    ``decode=False`` yields ``(encoded bytes, label)`` pairs instead.
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
    if not decode:
        pairs = raw.map(
            lambda example: (example["image"], example.get("label", tf.constant(-1, tf.int64)))
        )
        return pairs, int(raw.cardinality())
    decoded = raw.map(_preprocess(dataset), num_parallel_calls=tf.data.AUTOTUNE)
    return decoded.ignore_errors(log_warning=False), int(raw.cardinality())


def _host_threads() -> int:
    return max(2, min(os.cpu_count() or 2, 16))


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = _host_threads()
    return options


def num_examples(dataset: ImageDataset, split: str, data_dir: str | None = None) -> int:
    return builder(dataset.name, data_dir).info.splits[split].num_examples


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
    crop_scale: Sequence[float] = (0.08, 1.0),
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local batches ``{"image": uint8 [b, S, S, C], "label": int32 [b]}``.

    Epoch e is this process's slice of the train split in an order fixed by (seed, e), cut into
    full batches; iteration starts at ``start_step`` batches in, so a resumed run continues with
    exactly the batches an uninterrupted run would have seen.

    With ``dataset.host_crops`` the images are ``[b, 2, S, S, C]``: two random resized crops
    (area fraction ``U(crop_scale)`` of the full image) per example, drawn from (seed, epoch,
    position), and ``cache`` keeps the encoded bytes rather than decoded images.
    """
    steps_per_epoch = num_examples(dataset, dataset.train_split, data_dir) // process_count
    steps_per_epoch //= local_batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size is larger than one process's share of {dataset.name}/"
            f"{dataset.train_split}; lower batch_size."
        )
    base, stored = _read(
        dataset, dataset.train_split, data_dir, process_index, process_count,
        decode=not dataset.host_crops,
    )  # fmt: skip
    if cache:
        base = base.cache()
    crops = _two_crops(dataset, tuple(crop_scale)) if dataset.host_crops else None
    return _TrainBatches(
        base, stored, local_batch_size, steps_per_epoch, seed, start_step, shuffle_buffer, crops
    )


class _TrainBatches:
    """The endless batch iterator; counts the examples its pipeline could not decode.

    Attributes:
      skipped_examples: examples of this process's split that failed to decode, known from the
        end of the first pass on (the same ones fail in every pass).
    """

    def __init__(
        self, base, stored, local_batch_size, steps_per_epoch, seed, start_step, buffer, crops=None
    ):
        self._base, self._stored, self._batch, self._crops = base, stored, local_batch_size, crops
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
            shuffle_seed = epoch_seed(self._seed, self._epoch)
            ordered = self._base.shuffle(self._buffer, seed=shuffle_seed)
            if self._crops is not None:
                # Crops keyed by (epoch, position in the epoch's order): the same on resume.
                crop_seed = tf.constant(shuffle_seed % 2**31, tf.int64)
                ordered = (
                    ordered.enumerate()
                    .map(
                        lambda i, pair, s=crop_seed: self._crops(*pair, tf.stack([s, 2 * i])),
                        # One call per pool thread: autotuning the host crops' parallelism
                        # spent more CPU per image (benchmarks/input_pipeline.py measures it).
                        num_parallel_calls=_host_threads(),
                    )
                    .ignore_errors(log_warning=False)
                )
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


class SplitStream:
    """This process's slice of a labelled split as batches, re-read on every pass.

    Memory does not grow with the split: one batch of decoded images at a time, unless the
    decoded slice is small (``cache_bytes``), when tf.data keeps it after the first pass.

    Attributes:
      count: examples stored in this process's slice (undecodable ones included); ``len``.
      image_shape: one yielded image's shape.
      skipped: undecodable examples, known after the first full pass (None before).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        split: str,
        *,
        batch_size: int,
        max_examples: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        data_dir: str | None = None,
        pixel_size: int | None = None,
        cache_bytes: int = 2**28,
    ):
        ds, self.count = _read(dataset, split, data_dir, process_index, process_count, max_examples)
        self.name = f"{dataset.name}/{split}"
        side, channels = dataset.image_size, dataset.channels
        if pixel_size and pixel_size < side:
            # The pixel baselines: float rows of a small area-averaged copy, not the full image.
            ds = ds.map(
                lambda e: {**e, "image": tf.image.resize(e["image"], (pixel_size,) * 2, "area")},
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            side = pixel_size
        self.image_shape = (side, side, channels)
        itemsize = 4 if pixel_size and pixel_size < dataset.image_size else 1
        if self.count * side * side * channels * itemsize <= cache_bytes:
            ds = ds.cache()
        self._batches = ds.batch(batch_size).prefetch(2)
        self.skipped = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        decoded = 0
        for batch in self._batches.as_numpy_iterator():
            decoded += len(batch["label"])
            yield batch["image"], batch["label"]
        if self.skipped is None and decoded < self.count:
            logging.warning(
                "%s: skipped %d of %d images that could not be decoded",
                self.name, self.count - decoded, self.count,
            )  # fmt: skip
        self.skipped = self.count - decoded


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
