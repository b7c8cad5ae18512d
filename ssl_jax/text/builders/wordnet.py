"""WordNet glosses (definitions and examples) from Debian's ``wordnet-base`` package.

Each synset's gloss is the text after ``|`` in ``/usr/share/wordnet/data.{noun,verb,adj,adv}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ssl_jax.text.builders.base import TextCorpusBuilder, group_lines

WORDNET_DIR = "/usr/share/wordnet"
INSTALL_HINT = "apt-get install -y wordnet-base"
_PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
_VALIDATION_EVERY = 20  # every 20th document is held out


def glosses(path: str) -> Iterator[str]:
    """Gloss texts of one data file; the indented licence header has no synsets."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue
            yield line.split("|", 1)[1].strip()


class WordnetGlosses(TextCorpusBuilder, skip_registration=True):
    """117k glosses, 10 per document (consecutive synsets of one part of speech)."""

    name = "ssl_jax_wordnet_glosses"
    DESCRIPTION = "WordNet 3.0 glosses (Debian wordnet-base), 10 glosses per document."

    @classmethod
    def missing_source_message(cls) -> str | None:
        if not os.path.isfile(os.path.join(WORDNET_DIR, "data.noun")):
            return f"WordNet is not installed; run: {INSTALL_HINT}"
        return None

    def documents(self, split: str) -> Iterator[str]:
        index = 0
        for part in _PARTS_OF_SPEECH:
            path = os.path.join(WORDNET_DIR, f"data.{part}")
            for document in group_lines(list(glosses(path)), 10):
                held_out = index % _VALIDATION_EVERY == _VALIDATION_EVERY - 1
                if held_out == (split == "validation"):
                    yield document
                index += 1
