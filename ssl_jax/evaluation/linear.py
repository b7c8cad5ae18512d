"""Linear evaluation: a softmax classifier trained on a frozen encoder's cached features.

Features are extracted once per (checkpoint, split) and cached in ``WORKDIR/linear_eval``; the
classifier sees standardised features and no augmentation (cached features cannot be augmented).
What is fitted is the run's modality's (``Task.linear_eval``): linear probes for images
(``vision/linear.py``), the BBC News probe for text (``text/linear.py``), reported the same way.
"""

from __future__ import annotations

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

from ssl_jax import config_checks, tasks
from ssl_jax.core import parallel, storage
from ssl_jax.evaluation import features, pretrained

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
    # pretrained.load builds the model from what the run recorded (a text run's vocab): name a
    # missing piece here rather than report a checkpoint that does not restore.
    missing = tasks.of_method(run_config.method).read_back_problem(run_config)
    if missing:
        raise LinearEvalError(missing)
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
        buffer = io.BytesIO()
        np.savez(buffer, features=values, labels=labels, key=json.dumps(key))
        storage.write_atomically(path, buffer.getvalue())
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
    task = tasks.of_method(encoder.config.method)
    results = task.linear_eval(
        config, encoder, mesh=mesh, output_dir=output_dir, batch_size=feature_batch
    )
    _report(output_dir, encoder.step, results, time.time() - started)
    return results


def _report(output_dir: str, step: int, results: dict[str, float], seconds: float) -> None:
    writer = storage.create_writer(output_dir, just_logging=jax.process_index() > 0)
    writer.write_scalars(step, results)
    writer.close()
    if jax.process_index() == 0:
        record = {"step": step, **results, "wall_seconds": round(seconds, 1)}
        storage.write_atomically(
            os.path.join(output_dir, "results.json"), json.dumps(record, indent=2)
        )
