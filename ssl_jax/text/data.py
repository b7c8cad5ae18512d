"""Text input pipelines: documents → WordPiece ids → packed [CLS] … [SEP] sequences of max_seq_len.

Each process reads its own slice of the documents; the order is a function of (seed, epoch), so a
run resumed at step s sees the batches an uninterrupted run would have seen from step s on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.core.batching import epoch_seed
from ssl_jax.text import builders, packing
from ssl_jax.text.tokenizer import Vocab, build_vocab, load_vocab

tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True)
class TextDataset:
    """What the trainer needs to know about a text corpus.

    Attributes:
      name: the config's dataset name (``ptb``, ``wikipedia`` ...).
      tfds_name: tfds name or our builder's name.
      train_split / eval_split: tfds split strings for pretraining and held-out metrics.
      vocab_path: the WordPiece vocab.txt.
      lower_case: uncased tokenisation (lower-casing and accent stripping).
      text_key: feature holding the document text.
    """

    name: str
    tfds_name: str
    train_split: str
    eval_split: str
    vocab_path: str = ""
    lower_case: bool = True
    text_key: str = "text"
    default_vocab_size: int = 8192

    def vocab(self) -> Vocab:
        if not os.path.isfile(self.vocab_path):
            raise ValueError(f"vocab file {self.vocab_path!r} does not exist; {self._vocab_hint()}")
        return load_vocab(self.vocab_path, lower_case=self.lower_case)

    def _vocab_hint(self) -> str:
        # A path default_vocab_path made names the size, case and data dir to prepare it with.
        folder, file_name = os.path.split(self.vocab_path)
        stem, _, size = file_name.removesuffix(".txt").removesuffix("_cased").rpartition("_")
        if os.path.basename(folder) != "ssl_jax_vocab" or stem != self.name or not size.isdigit():
            return "point text.vocab_path at a WordPiece vocab file."
        command = prepare_command(
            self.name, int(size), not file_name.endswith("_cased.txt"), os.path.dirname(folder)
        )
        return f"build it with: {command}"


DATASETS = {
    # PTB has a 10k-word vocabulary: 4k pieces keep most words whole.
    "ptb": TextDataset(
        "ptb", builders.PennTreebankText.name, "train", "validation", default_vocab_size=4096
    ),
    "shakespeare": TextDataset("shakespeare", builders.ShakespeareText.name, "train", "validation"),
    "wordnet_glosses": TextDataset(
        "wordnet_glosses", builders.WordnetGlosses.name, "train", "validation"
    ),
    # tfds's own corpora, for machines that can download them.
    "wikipedia": TextDataset(
        "wikipedia", "wikipedia/20230601.en", "train[:99%]", "train[99%:]", default_vocab_size=30522
    ),
    "c4": TextDataset("c4", "c4/en", "train", "validation"),
    "lm1b": TextDataset("lm1b", "lm1b", "train", "test"),
}


def default_vocab_path(
    name: str, vocab_size: int, lower_case: bool = True, data_dir: str | None = None
) -> str:
    """Where ``prepare`` writes the vocab it builds for ``name``."""
    root = (
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    )
    suffix = "" if lower_case else "_cased"
    return os.path.join(root, "ssl_jax_vocab", f"{name}_{vocab_size}{suffix}.txt")


def describe(
    name: str,
    *,
    vocab_path: str | None = None,
    vocab_size: int | None = None,
    lower_case: bool = True,
    data_dir: str | None = None,
) -> TextDataset:
    """The ``TextDataset`` for a config's dataset name.

    ``vocab_path`` None means the vocab ``prepare`` builds, of ``vocab_size`` pieces (default:
    the dataset's ``default_vocab_size``).

    Raises:
      ValueError: unknown name.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown text dataset {name!r}: use one of {', '.join(sorted(DATASETS))}."
        )
    vocab_size = vocab_size or DATASETS[name].default_vocab_size
    path = vocab_path or default_vocab_path(name, vocab_size, lower_case, data_dir)
    return dataclasses.replace(DATASETS[name], vocab_path=path, lower_case=lower_case)


def describe_config(config) -> TextDataset:
    """``describe`` with a config's ``dataset``, ``data_dir`` and ``text`` fields."""
    return describe(
        config.dataset,
        vocab_path=config.text.get("vocab_path"),
        vocab_size=config.text.get("vocab_size"),
        lower_case=config.text.get("lower_case", True),
        data_dir=config.get("data_dir"),
    )


def builder(dataset: TextDataset, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Our builder for the local corpora, tfds's for the others."""
    if dataset.name in builders.BUILDERS:
        return builders.BUILDERS[dataset.name](data_dir=data_dir)
    return tfds.builder(dataset.tfds_name, data_dir=data_dir)


def prepare_command(
    name: str,
    vocab_size: int | None = None,
    lower_case: bool = True,
    data_dir: str | None = None,
) -> str:
    """The ``ssl_jax.data.prepare`` command that builds ``name`` and this vocab.

    >>> prepare_command("ptb", vocab_size=8192, data_dir="/data")
    'TFDS_DATA_DIR=/data python -m ssl_jax.data.prepare ptb:8192'
    >>> prepare_command("ptb", vocab_size=4096, lower_case=False)
    'python -m ssl_jax.data.prepare ptb --cased'
    """
    target = name
    if vocab_size and vocab_size != DATASETS[name].default_vocab_size:
        target = f"{name}:{vocab_size}"
    command = f"python -m ssl_jax.data.prepare {target}" + ("" if lower_case else " --cased")
    return f"TFDS_DATA_DIR={data_dir} {command}" if data_dir else command


def missing_data_message(name: str, data_dir: str | None = None, **describe_kwargs) -> str | None:
    """None when ``name`` and its vocab can be read now; otherwise one line saying what to run.

    The command named builds the vocab asked for (size, case, data dir), not the default one.
    """
    dataset = describe(name, data_dir=data_dir, **describe_kwargs)
    prepare = prepare_command(
        name,
        describe_kwargs.get("vocab_size"),
        describe_kwargs.get("lower_case", True),
        data_dir,
    )
    if name in builders.BUILDERS:
        message = builders.BUILDERS[name].missing_source_message()
        if message:
            return f"text dataset {name!r}: {message}, then {prepare}"
    if not builder(dataset, data_dir).is_prepared():
        return f"text dataset {name!r} is not prepared in the tfds data dir; run: {prepare}"
    if not os.path.isfile(dataset.vocab_path):
        if describe_kwargs.get("vocab_path"):
            return (
                f"vocab {dataset.vocab_path!r} (text.vocab_path) does not exist: point "
                f"text.vocab_path at a WordPiece vocab file, or unset it and run: {prepare}"
            )
        return (
            f"vocab {dataset.vocab_path!r} does not exist; run: {prepare} (or set text.vocab_path)"
        )
    return None


def _documents(dataset, split, process_index, process_count, data_dir) -> tf.data.Dataset:
    split = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count, drop_remainder=True
    )
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(options=options)
    ds = builder(dataset, data_dir).as_dataset(
        split=split, shuffle_files=False, read_config=read_config
    )
    return ds.map(lambda example: example[dataset.text_key])


def sequences(
    dataset: TextDataset,
    split: str,
    *,
    max_seq_len: int,
    order_seed: int | None = None,
    nsp: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    data_dir: str | None = None,
    vocab: Vocab | None = None,
) -> tf.data.Dataset:
    """One pass over this process's slice of ``split`` as packed sequences (dicts of [L]).

    ``order_seed`` None keeps the stored document order; otherwise documents are shuffled with
    it (the packed sequences are then shuffled again by the caller).
    """
    if max_seq_len < 8:
        raise ValueError(f"max_seq_len={max_seq_len} is too short for [CLS] A [SEP] B [SEP].")
    vocab = vocab or dataset.vocab()
    documents = _documents(dataset, split, process_index, process_count, data_dir)
    if order_seed is not None:
        documents = documents.shuffle(100_000, seed=order_seed, reshuffle_each_iteration=False)
    packed = packing.pack(documents, vocab, max_seq_len)
    if nsp:
        packed = packing.with_sentence_pairs(packed, vocab, order_seed or 0)
    return packed


def num_sequences(dataset: TextDataset, split: str, **sequence_kwargs) -> int:
    """Packed sequences in this process's slice of ``split`` (one tokenisation pass)."""
    return int(sequences(dataset, split, **sequence_kwargs).reduce(0, lambda n, _: n + 1))


def train_batches(
    dataset: TextDataset,
    *,
    local_batch_size: int,
    seed: int,
    max_seq_len: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 10_000,
    nsp: bool = False,
    data_dir: str | None = None,
    vocab: Vocab | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local batches of packed sequences.

    Yields ``{"token_ids": int32 [b, L], "segment_ids": int32 [b, L], "word_starts": bool
    [b, L]}`` (plus ``"next_sentence_labels": int32 [b]`` with ``nsp``). Epoch e is this
    process's slice in an order fixed by (seed, e); iteration starts ``start_step`` batches in.
    Resuming (``start_step`` > 0) first counts the sequences of one epoch, a tokenisation pass.

    >>> batches = train_batches(  # doctest: +SKIP
    ...     describe("ptb"), local_batch_size=8, seed=0, max_seq_len=128)
    """
    kwargs = dict(
        max_seq_len=max_seq_len,
        nsp=nsp,
        process_index=process_index,
        process_count=process_count,
        data_dir=data_dir,
        vocab=vocab or dataset.vocab(),
    )
    epoch, offset = 0, start_step
    if start_step:
        steps_per_epoch = num_sequences(dataset, dataset.train_split, **kwargs) // local_batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"batch_size is larger than one process's share of {dataset.name}.")
        epoch, offset = divmod(start_step, steps_per_epoch)
    while True:
        order_seed = epoch_seed(seed, epoch)
        epoch_data = sequences(dataset, dataset.train_split, order_seed=order_seed, **kwargs)
        epoch_data = epoch_data.shuffle(shuffle_buffer, seed=order_seed)
        batches = epoch_data.batch(local_batch_size, drop_remainder=True).skip(offset)
        produced = 0
        for batch in batches.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            produced += 1
            yield batch
        if produced == 0 and offset == 0:
            raise ValueError(f"batch_size is larger than one process's share of {dataset.name}.")
        epoch, offset = epoch + 1, 0


def load_eval_split(
    dataset: TextDataset,
    *,
    max_seq_len: int,
    max_sequences: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    data_dir: str | None = None,
    vocab: Vocab | None = None,
) -> dict[str, np.ndarray]:
    """This process's packed sequences of the eval split, in stored order (dict of [n, L])."""
    data = sequences(
        dataset, dataset.eval_split, max_seq_len=max_seq_len, process_index=process_index,
        process_count=process_count, data_dir=data_dir, vocab=vocab,
    )  # fmt: skip
    if max_sequences:
        data = data.take(max_sequences)
    parts = list(data.batch(4096).as_numpy_iterator())
    if not parts:
        raise ValueError(
            f"{dataset.name}/{dataset.eval_split} yields no sequence of {max_seq_len}."
        )
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def prepare(
    name: str,
    data_dir: str | None = None,
    *,
    vocab_size: int | None = None,
    lower_case: bool = True,
    max_vocab_documents: int = 200_000,
) -> TextDataset:
    """Builds the tfds dataset and, if absent, its WordPiece vocab; safe to run again.

    The vocab is learned from the first ``max_vocab_documents`` training documents.
    """
    dataset = describe(name, vocab_size=vocab_size, lower_case=lower_case, data_dir=data_dir)
    source = builder(dataset, data_dir)
    if not source.is_prepared():
        source.download_and_prepare()
    if not os.path.isfile(dataset.vocab_path):
        documents = _documents(dataset, dataset.train_split, 0, 1, data_dir)
        build_vocab(
            documents.take(max_vocab_documents),
            dataset.vocab_path,
            vocab_size=vocab_size or dataset.default_vocab_size,
            lower_case=lower_case,
        )
    return dataset
