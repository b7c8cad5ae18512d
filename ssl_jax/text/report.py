"""The report's pictures of a text run: held-out masked accuracy, and the model's guesses."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from ssl_jax.evaluation import plots
from ssl_jax.evaluation.run_reader import Missing, RunReader
from ssl_jax.text import data as text
from ssl_jax.text import evaluation

_SENTENCES = 3  # held-out sequences shown with the model's guesses


def _eval_data(run: RunReader) -> tuple:
    """(vocab, held-out sequences as the monitor reads them, most-frequent-token accuracy)."""

    def load():
        dataset = text.describe_config(run.config)
        vocab = dataset.vocab()
        data = evaluation.eval_sequences(run.config, dataset, vocab)
        return vocab, data, evaluation.frequency_baseline(data["token_ids"], vocab.special_ids)

    return run.cached("text_eval", load)


def _mlm_eval(run: RunReader) -> plots.Figure:
    accuracy = run.series("eval_mlm_accuracy")
    if not accuracy:
        raise Missing("no 'eval_mlm_accuracy' scalars in the event files yet")
    try:
        baseline = {"always the most frequent token": _eval_data(run)[2]}
    except (OSError, ValueError) as error:
        logging.warning("report: mlm_eval without its baseline: %s", error)
        baseline = {}
    panels = [
        plots.Panel("held-out masked accuracy", "accuracy", accuracy, baseline),
        plots.Panel("held-out perplexity", "perplexity", run.series("eval_perplexity"), log_y=True),
    ]
    return plots.line_panels(panels, title=run.title())


def _mlm_predictions(run: RunReader) -> plots.Figure:
    model, (vocab, data, _) = run.pretrained, _eval_data(run)
    count = min(_SENTENCES, len(data["token_ids"]))
    batch = {key: value[:count] for key, value in data.items()}
    token_ids = batch["token_ids"]
    # The monitor's key and example ids: these are the masks its held-out accuracy counts.
    rng = jax.random.PRNGKey(run.config.mlm.eval_mask_seed)
    input_ids, positions, labels, weights = jax.device_get(
        model.method.mask(batch, rng, np.arange(count))
    )
    segment_ids = batch.get("segment_ids", np.zeros_like(token_ids))
    logits = model.method.predict(model.variables["params"], input_ids, segment_ids, positions)
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))  # [B, P, V]
    texts, guesses = [], []
    for row in range(count):
        used = int(weights[row].sum())
        texts.append(_blanked_text(token_ids[row], positions[row, :used], vocab))
        guesses.append([
            _guess(vocab, labels[row, slot], input_ids[row, positions[row, slot]],
                   probabilities[row, slot])
            for slot in range(used)
        ])  # fmt: skip
    title = f"{run.title()}, step {model.step}: held-out sequences"
    return plots.masked_predictions(texts, guesses, title=title)


def _blanked_text(token_ids: np.ndarray, masked: np.ndarray, vocab) -> str:
    """The sequence as words, its masked pieces written ``[1]``, ``[2]`` … in order."""
    blanks = {int(position): number for number, position in enumerate(masked, 1)}
    pieces = []
    for position, token in enumerate(token_ids):
        if token == vocab.pad_id:
            continue
        piece = vocab.tokens[token]
        if position in blanks:
            piece = ("##" if piece.startswith("##") else "") + f"[{blanks[position]}]"
        pieces.append(piece)
    return " ".join(pieces).replace(" ##", "")


def _guess(vocab, label: int, shown: int, probabilities: np.ndarray) -> plots.MaskedGuess:
    best = np.argsort(-probabilities)[:3]
    return plots.MaskedGuess(
        original=vocab.tokens[label],
        shown=vocab.tokens[shown],
        top=[(vocab.tokens[i], float(probabilities[i])) for i in best],
    )


PLOTS: dict[str, Callable[[RunReader], plots.Figure]] = {
    "mlm_eval": _mlm_eval,
    "mlm_predictions": _mlm_predictions,
}
