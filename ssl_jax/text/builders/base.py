"""The shared shape of our offline text corpora as tfds builders: {"text": document} examples.

Subclasses list their documents per split; empty documents are skipped and counted here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import tensorflow_datasets as tfds
from absl import logging

SPLITS = ("train", "validation")


def group_lines(lines: list[str], lines_per_document: int) -> Iterator[str]:
    """Consecutive non-empty lines joined into documents of ``lines_per_document`` lines."""
    kept = [line.strip() for line in lines if line.strip()]
    for start in range(0, len(kept), lines_per_document):
        yield "\n".join(kept[start : start + lines_per_document])


class TextCorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A corpus of plain-text documents with train and validation splits.

    Builders are not put in tfds's name registry (``text.builder`` constructs them by class), so
    importing this package twice, as doctest collection may, cannot clash.
    """

    VERSION = tfds.core.Version("1.0.0")
    DESCRIPTION = ""

    @abc.abstractmethod
    def documents(self, split: str) -> Iterator[str]:
        """The raw documents of ``split`` (may be empty; those are skipped)."""

    @classmethod
    def missing_source_message(cls) -> str | None:
        """None when the source files are installed; else one line saying how to install them."""
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local
        message = self.missing_source_message()
        if message:
            raise FileNotFoundError(message)
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        skipped = 0
        for index, document in enumerate(self.documents(split)):
            if not document.strip():
                skipped += 1
                continue
            yield index, {"text": document}
        if skipped:
            logging.info("%s/%s: skipped %d empty documents", self.name, split, skipped)
