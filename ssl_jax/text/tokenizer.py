"""WordPiece vocabularies (built from a corpus or loaded from a BERT vocab.txt) and tokenisation.

Tokenisation runs inside tf.data with tensorflow-text's FastBertTokenizer; the vocabulary file
has one token per line, Google's format.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable

import numpy as np
from etils import epy

from ssl_jax.core import storage

with epy.lazy_imports():
    import tensorflow as tf

# Layout of a vocabulary built here: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then pieces.
# Google's vocabularies place them elsewhere ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
# [MASK] 103), so ids are always looked up by name.
RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A WordPiece vocabulary and the ids of its special tokens.

    Attributes:
      tokens: the pieces, index = id (continuations start with ``##``).
      lower_case: whether text is lower-cased and accent-stripped before lookup.
      path: the vocab.txt it came from, or "".
    """

    tokens: tuple[str, ...]
    lower_case: bool = True
    path: str = ""

    def __post_init__(self):
        missing = [t for t in RESERVED_TOKENS if t not in self.index]
        if missing:
            where = self.path or "the vocabulary"
            raise ValueError(f"{where} lacks the special tokens {missing}; BERT needs all of "
                             f"{list(RESERVED_TOKENS)}.")  # fmt: skip

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self.index[token]

    @property
    def pad_id(self) -> int:
        return self.id("[PAD]")

    @property
    def unk_id(self) -> int:
        return self.id("[UNK]")

    @property
    def cls_id(self) -> int:
        return self.id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.id("[SEP]")

    @property
    def mask_id(self) -> int:
        return self.id("[MASK]")

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids never masked nor drawn as replacements: bracketed tokens ([PAD], [unused3])."""
        return tuple(i for i, t in enumerate(self.tokens) if t.startswith("[") and t.endswith("]"))

    @property
    def continuation(self) -> np.ndarray:
        """bool [V]: True for pieces that continue a word (``##...``)."""
        return np.array([t.startswith("##") for t in self.tokens], bool)


def load_vocab(path: str, lower_case: bool = True) -> Vocab:
    """Reads a BERT vocab.txt (one token per line, UTF-8).

    Raises:
      ValueError: missing file, duplicate tokens, or a special token ([MASK] ...) missing.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = open(path, "w").write("\\n".join(RESERVED_TOKENS + ("the", "##s")) + "\\n")
    >>> vocab = load_vocab(path)
    >>> vocab.size, vocab.mask_id, vocab.continuation.tolist()[-2:]
    (7, 4, [False, True])
    """
    if not os.path.isfile(path):
        raise ValueError(f"vocab file {path!r} does not exist; build it with "
                         "python -m ssl_jax.data.prepare <dataset>.")  # fmt: skip
    with open(path, encoding="utf-8") as f:
        tokens = tuple(line.rstrip("\n").rstrip("\r") for line in f)
    while tokens and not tokens[-1]:
        tokens = tokens[:-1]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"vocab file {path!r} holds duplicate tokens.")
    return Vocab(tokens, lower_case=lower_case, path=path)


def build_vocab(
    texts: tf.data.Dataset | Iterable[str],
    path: str,
    *,
    vocab_size: int,
    lower_case: bool = True,
) -> Vocab:
    """Learns a WordPiece vocabulary of about ``vocab_size`` pieces and writes it to ``path``.

    Uses tensorflow-text's ``bert_vocab_from_dataset`` (the learner behind Google's BERT
    vocabularies); the reserved tokens take ids 0-4 (``RESERVED_TOKENS``).

    Args:
      texts: a dataset of string scalars, or strings.
      path: where vocab.txt goes (written atomically).
      vocab_size: target size including the reserved tokens.
      lower_case: lower-case and strip accents first (uncased BERT).
    """
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as learner

    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    texts = texts.map(_valid_utf8).batch(1024).prefetch(tf.data.AUTOTUNE)
    tokens = learner.bert_vocab_from_dataset(
        texts,
        vocab_size=vocab_size,
        reserved_tokens=list(RESERVED_TOKENS),
        bert_tokenizer_params={"lower_case": lower_case},
        learn_params={},
    )
    storage.write_atomically(path, "".join(token + "\n" for token in tokens))
    return Vocab(tuple(tokens), lower_case=lower_case, path=path)


def _valid_utf8(text: tf.Tensor) -> tf.Tensor:
    # Bytes that are not UTF-8 become U+FFFD instead of failing the pipeline mid-run.
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")


class Tokenizer:
    """Text → WordPiece ids and word-start flags, as TensorFlow ops for tf.data.

    >>> vocab = Vocab(RESERVED_TOKENS + ("the", "cafe", "##s"))
    >>> ids, starts = Tokenizer(vocab).tokenize(tf.constant(["The Cafés"]))
    >>> ids.to_list(), starts.to_list()
    ([[5, 6, 7]], [[True, True, False]])
    """

    def __init__(self, vocab: Vocab):
        import tensorflow_text as tf_text

        self.vocab = vocab
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=list(vocab.tokens),
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            support_detokenization=True,
            lower_case_nfd_strip_accents=vocab.lower_case,
        )
        self._continuation = tf.constant(vocab.continuation)

    def tokenize(self, texts: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
        """Strings [n] → (int32 ids [n, (pieces)], bool word_starts [n, (pieces)])."""
        ids = self._tokenizer.tokenize(_valid_utf8(texts))
        starts = tf.ragged.map_flat_values(
            lambda flat: tf.logical_not(tf.gather(self._continuation, flat)), ids
        )
        return ids, starts

    def detokenize(self, ids) -> list[str]:
        """int ids [n, (pieces)] → n strings (pieces joined into words, specials kept)."""
        return [t.decode("utf-8") for t in self._tokenizer.detokenize(ids).numpy()]
