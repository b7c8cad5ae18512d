"""Pictures of a pretraining run from its workdir alone: PNGs in ``WORKDIR/plots``, and TensorBoard.

python -m ssl_jax.report --workdir=DIR [--embedding=tsne]

Reads ``config.json``, the clu event files and the newest checkpoint; a missing piece (no
checkpoint yet, no evaluation logged) skips its plot with a warning.
"""

from __future__ import annotations

import io
import os
import sys

from absl import app, flags, logging

from ssl_jax import tasks
from ssl_jax.core import storage
from ssl_jax.evaluation import plots
from ssl_jax.evaluation.run_reader import Missing, RunReader

PLOTS_DIR = "plots"
EMBEDDING_METHODS = ("pca", "tsne")


def _training_curves(run: RunReader) -> plots.Figure:
    if "loss" not in run.scalars:
        raise Missing("no 'loss' scalars in the event files yet")
    panels = [plots.Panel("training loss", f"{run.config.method} loss", run.series("loss"))]
    if "learning_rate" in run.scalars:
        panels.append(plots.Panel("learning rate", "learning rate", run.series("learning_rate")))
    return plots.line_panels(panels, title=run.title())


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
    # The curves every run has, then the pictures of its modality (kNN, embeddings; MLM).
    makers = {"training_curves": _training_curves, **tasks.of_method(run.config.method).plots()}
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
