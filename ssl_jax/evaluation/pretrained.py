"""A finished (or running) pretraining workdir, read back: its config, method and weights.

Linear evaluation, the report's plots and notebooks all start from a workdir alone: the config the
run recorded in ``config.json`` rebuilds the method, and the newest good checkpoint gives the
weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from ssl_jax import tasks
from ssl_jax.core import checkpoint, storage
from ssl_jax.methods import METHODS, Method


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """What a pretraining workdir holds.

    Attributes:
      workdir: the directory read.
      config: the config the run was started with.
      method: the method rebuilt from ``config`` (BatchNorm without a device axis: evaluation only).
      variables: ``{"params", "batch_stats"}`` as host arrays, at ``step``.
      step: the checkpoint's step, or None for ``load(..., step=0)`` without checkpoints.
      dataset: the modality's description of ``config.dataset`` (``Task.describe``): an
        ``ImageDataset`` or a ``TextDataset``.
    """

    workdir: str
    config: ml_collections.ConfigDict
    method: Method
    variables: dict[str, Any]
    step: int | None
    dataset: Any


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config recorded in ``workdir/config.json``.

    Raises:
      FileNotFoundError: ``workdir`` holds no recorded run.
    """
    path = os.path.join(workdir, "config.json")
    if not storage.path(path).exists():
        raise FileNotFoundError(
            f"{workdir} holds no config.json: pass the --workdir of a pretraining run."
        )
    return ml_collections.ConfigDict(json.loads(storage.path(path).read_text()))


def load(workdir: str, step: int | None = None, *, random_init: bool = False) -> Pretrained:
    """The run in ``workdir`` at checkpoint ``step`` (default: the newest that restores).

    Args:
      workdir: a pretraining ``--workdir``.
      step: checkpoint step to read; None for the newest good one.
      random_init: ignore checkpoints and return the run's initial weights (the same seed the run
        started from): the random-features reference of linear evaluation.

    Raises:
      FileNotFoundError: no config.json, or no checkpoint (unless ``random_init``).
    """
    config = read_config(workdir)
    task = tasks.of_method(config.method)
    dataset = task.describe(config)
    method = METHODS[config.method].make(config, task.image_size(dataset), None, total_steps=1)
    if random_init:
        sample = task.sample_batch(config, dataset, 2)
        init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]  # as train.create_state
        variables = jax.jit(method.init)(init_rng, sample)
        return Pretrained(workdir, config, method, _host(variables), None, dataset)
    if not storage.path(workdir, "checkpoints").is_dir():
        raise FileNotFoundError(
            f"no checkpoint in {workdir}: train first, or pass random_init=True."
        )
    checkpoints = checkpoint.Checkpointer(workdir, async_save=False, create=False)
    try:
        steps = [step] if step is not None else checkpoints.all_steps()[::-1]
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint in {checkpoints.directory}: train first, or pass random_init=True."
            )
        for candidate in steps:
            try:
                saved = checkpoints.restore_arrays(candidate)
                break
            except Exception as error:  # noqa: BLE001 - a damaged step: read an older one
                if candidate == steps[-1]:
                    raise
                logging.warning("checkpoint step %d does not restore (%s)", candidate, error)
    finally:
        checkpoints.close()
    return Pretrained(workdir, config, method, _host(saved), candidate, dataset)


def _host(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        "params": jax.device_get(tree["params"]),
        "batch_stats": jax.device_get(tree.get("batch_stats", {})),
    }
