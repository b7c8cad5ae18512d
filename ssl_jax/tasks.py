"""The modalities a method trains on, by name: the one module that knows images and text both.

A method module says ``MODALITY = "image"`` or ``"text"``; ``of_method`` returns that modality's
``ssl_jax.core.task.Task``. Task modules load on first use (the text one imports TensorFlow Text).
"""

from __future__ import annotations

import importlib

from ssl_jax.core.task import Task
from ssl_jax.methods import METHODS

# Most specific first: a dataset name goes to the first modality that claims it.
MODULES = {"text": "ssl_jax.text.task", "image": "ssl_jax.vision.task"}


def get(name: str) -> Task:
    """The ``Task`` of modality ``name`` ("image" or "text")."""
    if name not in MODULES:
        raise ValueError(f"unknown modality {name!r}: use one of {sorted(MODULES)}.")
    return importlib.import_module(MODULES[name]).TASK


def of_method(method: str) -> Task:
    """The ``Task`` a registered method trains on."""
    return get(METHODS[method].MODALITY)


def owner(dataset: str) -> str:
    """The modality a dataset name belongs to (images take every name text does not claim)."""
    return next(name for name in MODULES if get(name).claims(dataset))


def mismatch(method: str, dataset: str) -> str | None:
    """One line when ``dataset`` is of another modality than ``method`` trains on, else None."""
    wants, has = METHODS[method].MODALITY, owner(dataset)
    if wants == has:
        return None
    kinds = {"image": "an image", "text": "a text"}
    return (
        f"dataset={dataset!r} is {kinds[has]} dataset, but method={method!r} trains on "
        f"{'images' if wants == 'image' else 'text'}" + get(wants).dataset_hint + "."
    )
