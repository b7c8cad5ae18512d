"""Pictures of a pretraining run from its workdir alone: PNGs in ``WORKDIR/plots``, and TensorBoard.

python -m ssl_jax.report --workdir=DIR [--embedding=tsne]

Reads ``config.json``, the clu event files and the newest checkpoint; a missing piece (no
checkpoint yet, no evaluation logged) skips its plot with a warning.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import Callable

import jax
import numpy as np
from absl import app, flags, logging

from ssl_jax import masking
from ssl_jax.core import storage
from ssl_jax.data import sources
from ssl_jax.evaluation import plots
from ssl_jax.methods import mlm, simclr
from ssl_jax.run_reader import Missing, RunReader
from ssl_jax.vision import augment
from ssl_jax.vision import data as images

PLOTS_DIR = "plots"
EMBEDDING_METHODS = ("pca", "tsne")
_ENCODE_CHUNK = 256  # images per forward pass when embedding the test split
_SENTENCES = 3  # held-out sequences shown with the model's guesses


def _training_curves(run: RunReader) -> plots.Figure:
    if "loss" not in run.scalars:
        raise Missing("no 'loss' scalars in the event files yet")
    panels = [plots.Panel("training loss", f"{run.config.method} loss", run.series("loss"))]
    if "learning_rate" in run.scalars:
        panels.append(plots.Panel("learning rate", "learning rate", run.series("learning_rate")))
    return plots.line_panels(panels, title=run.title())


def _knn_accuracy(run: RunReader) -> plots.Figure:
    labels = {
        "knn_top1": "kNN top-1 (test split)",
        "probe_top1": "online linear probe top-1 (training batches)",
    }
    series = {labels[tag]: values for tag, values in run.series(*labels).items()}
    if not series:
        raise Missing("no 'knn_top1' or 'probe_top1' scalars in the event files yet")
    baselines = {}
    path = storage.path(run.workdir, "knn_pixel_baseline.json")
    if path.exists():
        baselines["kNN top-1 on raw pixels"] = json.loads(path.read_text())["knn_top1"]
    panel = plots.Panel("accuracy during pretraining", "top-1 accuracy", series, baselines)
    return plots.line_panels([panel], title=run.title())


def _embeddings(run: RunReader) -> plots.Figure:
    model = run.pretrained
    dataset = model.dataset
    test_images, labels = images.load_split(
        dataset,
        dataset.test_split,
        max_examples=run.max_embedding_examples,
        data_dir=run.config.data_dir,
    )
    encode = jax.jit(model.method.encode)
    features = []
    for start in range(0, len(test_images), _ENCODE_CHUNK):
        chunk = test_images[start : start + _ENCODE_CHUNK]
        # Padding the last chunk keeps one compiled shape.
        padded = np.zeros((_ENCODE_CHUNK, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk
        features.append(np.asarray(encode(model.variables, padded))[: len(chunk)])
    points = plots.project_2d(np.concatenate(features), method=run.embedding, seed=run.config.seed)
    title = (
        f"{run.title()}: {len(labels)} {dataset.test_split} images, encoder features at step "
        f"{model.step}, {run.embedding.upper()}"
    )
    return plots.embedding_map(points, labels, _class_names(dataset, run.config), title=title)


def _class_names(dataset, config) -> list[str]:
    features = images.builder(dataset.name, config.data_dir).info.features
    label = features["label"] if "label" in features.keys() else None
    names = list(getattr(label, "names", None) or [])
    return (
        names if len(names) == dataset.num_classes else [str(i) for i in range(dataset.num_classes)]
    )


def _augmented_views(run: RunReader) -> plots.Figure:
    dataset = images.describe(run.config.dataset, run.config.image_size, run.config.data_dir)
    originals, _ = images.load_split(
        dataset, dataset.train_split, max_examples=6, data_dir=run.config.data_dir
    )
    # Jitted: run op by op, the vmapped pipeline dispatches hundreds of small programs.
    views = jax.jit(
        functools.partial(
            augment.simclr_views, **simclr.augment_kwargs(run.config, dataset.image_size)
        )
    )
    view1, view2 = views(jax.random.PRNGKey(run.config.seed), originals)
    figure = plots.view_pairs(originals, np.asarray(view1), np.asarray(view2))
    figure.suptitle(f"{run.title()} augmentations", fontsize="medium")
    return figure


def _mlm_eval(run: RunReader) -> plots.Figure:
    accuracy = run.series("eval_mlm_accuracy")
    if not accuracy:
        raise Missing("no 'eval_mlm_accuracy' scalars in the event files yet")
    try:
        baseline = {"always the most frequent token": run.text_eval[2]}
    except (OSError, ValueError) as error:
        logging.warning("report: mlm_eval without its baseline: %s", error)
        baseline = {}
    panels = [
        plots.Panel("held-out masked accuracy", "accuracy", accuracy, baseline),
        plots.Panel("held-out perplexity", "perplexity", run.series("eval_perplexity"), log_y=True),
    ]
    return plots.line_panels(panels, title=run.title())


def _mlm_predictions(run: RunReader) -> plots.Figure:
    model, (vocab, data, _) = run.pretrained, run.text_eval
    config, count = run.config, min(_SENTENCES, len(run.text_eval[1]["token_ids"]))
    token_ids = data["token_ids"][:count]
    whole_word = config.text.get("whole_word_masking", False)
    # The monitor's key and example ids: these are the masks its held-out accuracy counts.
    input_ids, positions, labels, weights = jax.device_get(
        masking.mask_tokens(
            jax.random.PRNGKey(config.mlm.eval_mask_seed), token_ids, mask_id=vocab.mask_id,
            vocab_size=vocab.size, special_ids=vocab.special_ids,
            mask_rate=config.mlm.mask_rate, max_predictions=config.mlm.max_predictions,
            word_starts=data["word_starts"][:count] if whole_word else None,
            example_ids=np.arange(count),
        )
    )  # fmt: skip
    segment_ids = data.get("segment_ids", np.zeros_like(data["token_ids"]))[:count]
    logits, _ = mlm.build_model(config, vocab).apply(
        {"params": model.variables["params"]}, input_ids, segment_ids, positions, train=False
    )
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


IMAGE_PLOTS: dict[str, Callable[[RunReader], plots.Figure]] = {
    "training_curves": _training_curves,
    "knn_accuracy": _knn_accuracy,
    "embeddings": _embeddings,
    "augmented_views": _augmented_views,
}
TEXT_PLOTS: dict[str, Callable[[RunReader], plots.Figure]] = {
    "training_curves": _training_curves,
    "mlm_eval": _mlm_eval,
    "mlm_predictions": _mlm_predictions,
}


def write(
    workdir: str,
    *,
    writer=None,
    embedding: str = "pca",
    max_embedding_examples: int = 2000,
) -> list[str]:
    """Draws the run in ``workdir`` into ``workdir/plots/<name>.png``; returns the paths written.

    Args:
      workdir: a pretraining ``--workdir`` (``config.json``, event files, checkpoints).
      writer: optional clu ``MetricWriter``; the same images go to it under ``plots/<name>`` at
        the last logged step.
      embedding: ``"pca"`` or ``"tsne"`` for the map of test-image features.
      max_embedding_examples: test images in that map (the first ones of the split).

    Raises:
      FileNotFoundError: ``workdir`` holds no ``config.json``.
      ValueError: unknown ``embedding``.
    """
    if embedding not in EMBEDDING_METHODS:
        raise ValueError(f"embedding must be one of {EMBEDDING_METHODS}; got {embedding!r}.")
    run = RunReader(workdir, embedding=embedding, max_embedding_examples=max_embedding_examples)
    makers = TEXT_PLOTS if sources.is_text(run.config) else IMAGE_PLOTS
    directory = os.path.join(workdir, PLOTS_DIR)
    storage.makedirs(directory)
    paths, rendered = [], {}
    for name, make in makers.items():
        try:
            figure = make(run)
        except Missing as missing:
            logging.warning("report: skipped %s: %s", name, missing)
            continue
        except Exception:  # noqa: BLE001 - a finished run must not fail on a picture
            logging.exception("report: %s failed; the other plots go on", name)
            continue
        path = os.path.join(directory, f"{name}.png")
        png = io.BytesIO()
        plots.save_png(figure, png)
        storage.write_atomically(path, png.getvalue())
        paths.append(path)
        if writer is not None:
            rendered[f"{PLOTS_DIR}/{name}"] = plots.to_rgb(figure)
    if rendered:
        writer.write_images(run.last_step(), rendered)
        writer.flush()
    logging.info("report: wrote %s", ", ".join(paths) or "nothing")
    return paths


FLAGS = flags.FLAGS
HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpshort"}


def _define_flags() -> None:
    # Defined only when run as a program: the trainer imports this module beside main's flags.
    flags.DEFINE_string("workdir", None, "A pretraining --workdir to draw.")
    flags.DEFINE_enum("embedding", "pca", EMBEDDING_METHODS, "2-D map of the test features.")
    flags.DEFINE_integer("max_embedding_examples", 2000, "Test images in the embedding map.")
    flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        paths = write(
            FLAGS.workdir,
            embedding=FLAGS.embedding,
            max_embedding_examples=FLAGS.max_embedding_examples,
        )
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    if not paths:
        sys.exit(f"error: no plot could be drawn from {FLAGS.workdir}; see the warnings above.")
    print("\n".join(paths), flush=True)


if __name__ == "__main__":
    _define_flags()
    if HELP_FLAGS & set(sys.argv[1:]):  # absl's --help exits with status 1
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main)
