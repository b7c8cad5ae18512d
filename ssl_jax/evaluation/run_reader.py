"""A pretraining workdir read back for pictures: its config, logged scalars and checkpoint.

Each piece is read once and only when asked for; one that is not there (yet) raises ``Missing``
with what is absent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ssl_jax.core import events
from ssl_jax.evaluation import plots, pretrained


class Missing(Exception):
    """A piece a plot needs is not in the workdir (yet); the message says which."""


class RunReader:
    """The workdir's pieces, each read once and only when a plot asks for it."""

    def __init__(self, workdir: str, *, embedding: str, max_embedding_examples: int):
        self.workdir = workdir
        self.config = pretrained.read_config(workdir)
        self.scalars = events.read_scalars(workdir)
        self.embedding, self.max_embedding_examples = embedding, max_embedding_examples
        self._cache: dict[str, Any] = {}

    @functools.cached_property
    def pretrained(self) -> pretrained.Pretrained:
        if jax.process_count() > 1:
            # Orbax restores collectively: process 0 alone would wait for the others forever.
            raise Missing(
                "the checkpoint is read by all processes together; run "
                f"python -m ssl_jax.report --workdir={self.workdir} once the run has ended"
            )
        try:
            return pretrained.load(self.workdir)
        except FileNotFoundError as error:
            raise Missing(str(error)) from None

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per reader: what several plots of a modality read (held-out data)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def series(self, *tags: str) -> dict[str, plots.Series]:
        return {tag: self.scalars[tag] for tag in tags if tag in self.scalars}

    def last_step(self) -> int:
        return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)

    def title(self) -> str:
        return f"{self.config.method} on {self.config.dataset}"
