"""Packing of tokenised documents into fixed-length BERT inputs, and NSP sentence pairs.

Pure tf.data transformations, so they run inside the input pipeline on the host.
"""

from __future__ import annotations

import tensorflow as tf

from ssl_jax.text.tokenizer import Tokenizer, Vocab

_DOCUMENTS_PER_GROUP = 256  # documents tokenised together and concatenated


def pack(documents: tf.data.Dataset, vocab: Vocab, max_seq_len: int) -> tf.data.Dataset:
    """Documents → one stream (a [SEP] after each) → chunks → ``[CLS] chunk [SEP]``.

    A chunk may span several short documents; the partial chunk at the end is dropped, so the
    number of sequences is ``floor(total pieces / (max_seq_len - 2))`` whatever the order.
    """
    tokenizer = Tokenizer(vocab)
    body = max_seq_len - 2
    sep = tf.constant(vocab.sep_id, tf.int32)

    def tokenize(texts):
        ids, starts = tokenizer.tokenize(texts)
        keep = ids.row_lengths() > 0  # empty and whitespace-only documents are skipped
        ids, starts = tf.ragged.boolean_mask(ids, keep), tf.ragged.boolean_mask(starts, keep)
        rows = tf.shape(ids.row_lengths())[0]
        ids = tf.concat([ids, tf.fill([rows, 1], sep)], axis=1)
        starts = tf.concat([starts, tf.ones([rows, 1], tf.bool)], axis=1)
        return ids.values, starts.values

    def chunk(leftover, stream):
        ids = tf.concat([leftover[0], stream[0]], 0)
        starts = tf.concat([leftover[1], stream[1]], 0)
        count = tf.shape(ids)[0] // body * body
        chunks = (tf.reshape(ids[:count], [-1, body]), tf.reshape(starts[:count], [-1, body]))
        return (ids[count:], starts[count:]), chunks

    empty = (tf.zeros([0], tf.int32), tf.zeros([0], tf.bool))
    stream = documents.batch(_DOCUMENTS_PER_GROUP).map(tokenize)
    chunks = stream.scan(empty, chunk).unbatch()

    def frame(ids, starts):
        cls = tf.constant([vocab.cls_id], tf.int32)
        token_ids = tf.concat([cls, ids, [sep]], 0)
        word_starts = tf.concat([[True], starts, [True]], 0)
        return {
            "token_ids": tf.ensure_shape(token_ids, [max_seq_len]),
            "segment_ids": tf.zeros([max_seq_len], tf.int32),
            "word_starts": tf.ensure_shape(word_starts, [max_seq_len]),
        }

    return chunks.map(frame)


def with_sentence_pairs(sequences: tf.data.Dataset, vocab: Vocab, seed: int) -> tf.data.Dataset:
    """NSP inputs from pairs of packed sequences: ``[CLS] A [SEP] B [SEP]``, segments 0 / 1.

    A is the first half of a sequence's body; B is its own second half (label 0, is next) or the
    other sequence's second half (label 1) with probability 1/2 each. Negatives come from nearby
    text (the other chunk of the pair), which makes NSP harder than BERT's random documents.
    """

    def pair(index, batch):
        ids, starts = batch["token_ids"][:, 1:-1], batch["word_starts"][:, 1:-1]
        length = tf.shape(ids)[1] - 1  # one more [SEP] goes between A and B
        half = length // 2
        flip = tf.random.stateless_uniform([], seed=[seed, index]) < 0.5
        b_source = tf.where(flip, [1, 0], [0, 1])
        sep = tf.fill([2, 1], tf.constant(vocab.sep_id, tf.int32))
        cls = tf.fill([2, 1], tf.constant(vocab.cls_id, tf.int32))
        second = tf.gather(ids[:, half:length], b_source)
        token_ids = tf.concat([cls, ids[:, :half], sep, second, sep], 1)
        true = tf.ones([2, 1], tf.bool)
        word_starts = tf.concat(
            [true, starts[:, :half], true, tf.gather(starts[:, half:length], b_source), true], 1
        )
        segment = tf.concat(
            [tf.zeros([2, half + 2], tf.int32), tf.ones([2, length - half + 1], tf.int32)], 1
        )
        labels = tf.fill([2], tf.cast(flip, tf.int32))
        return {"token_ids": token_ids, "segment_ids": segment, "word_starts": word_starts,
                "next_sentence_labels": labels}  # fmt: skip

    return sequences.batch(2, drop_remainder=True).enumerate().map(pair).unbatch()
