"""Command-line export of a pretraining run's encoder alone (weights + model description).

python -m ssl_jax.export --workdir=PRETRAIN_DIR --out=EXPORT_DIR [--step=N] [--overwrite]
  [--layout=hf]  (a BERT run as a Hugging Face BertForMaskedLM folder)
Reads the newest good checkpoint (or ``--step``), keeps the encoder's params and BatchNorm
statistics (no projection head, optimiser or method state; a BERT run keeps its MLM head) and
writes them with ``ssl_jax.models.interop.exported.write``; ``ssl_jax.models.load_encoder``
reads the folder back.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

import jax
import numpy as np
from absl import app, flags

from ssl_jax import tasks
from ssl_jax.evaluation import pretrained
from ssl_jax.models.interop import bert_checkpoints, exported

FLAGS = flags.FLAGS
VOCAB_FILE = "vocab.txt"


def encoder_of(run: pretrained.Pretrained) -> tuple[dict[str, Any], dict[str, Any], dict]:
    """(variables, metadata, extra files) of the encoder inside a loaded run."""
    config = run.config
    variables, metadata, extra_files = tasks.of_method(config.method).export_encoder(run)
    metadata["source"] = {
        "workdir": os.path.abspath(run.workdir) if "://" not in run.workdir else run.workdir,
        "step": run.step,
        "method": config.method,
        "dataset": config.dataset,
    }
    return variables, metadata, extra_files


def export(
    workdir: str,
    out: str,
    *,
    step: int | None = None,
    overwrite: bool = False,
    layout: str = "ssl_jax",
) -> dict[str, Any]:
    """Writes the encoder of ``workdir`` (checkpoint ``step``, default the newest) to ``out``.

    ``layout="hf"`` (BERT runs) writes ``config.json`` + ``model.safetensors`` for
    ``transformers.BertForMaskedLM.from_pretrained`` instead, with the vocab.txt beside them.

    Returns:
      The metadata written to ``out/encoder.json``.

    Raises:
      FileExistsError: ``out`` exists and ``overwrite`` is False (before reading anything).
      FileNotFoundError: ``workdir`` holds no run or no checkpoint.
      ValueError: ``layout`` unknown, or "hf" for an image run.
    """
    if layout not in ("ssl_jax", "hf"):
        raise ValueError(f"--layout={layout!r}: use 'ssl_jax' or 'hf'.")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"--out={out} exists: choose a new folder or pass --overwrite.")
    if layout == "hf" and tasks.of_method(pretrained.read_config(workdir).method).name != "text":
        raise ValueError(
            "--layout=hf is for BERT (mlm) runs; an image run exports --layout=ssl_jax."
        )
    run = pretrained.load(workdir, step)
    variables, metadata, extra_files = encoder_of(run)
    if layout == "hf":
        return _write_hf(out, variables["params"], metadata, extra_files, overwrite=overwrite)
    return exported.write(out, variables, metadata, overwrite=overwrite, extra_files=extra_files)


def _write_hf(out, params, metadata, extra_files, *, overwrite: bool) -> dict[str, Any]:
    """``bert_checkpoints.save_hf`` into a sibling folder renamed to ``out`` when complete."""
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(out)}.partial-", dir=os.path.dirname(out)
    )
    os.chmod(staging, 0o755)  # mkdtemp's 0o700 would hide the export from other users
    try:
        bert_checkpoints.save_hf(staging, metadata["bert"], params)
        for name, source in extra_files.items():
            shutil.copyfile(source, os.path.join(staging, name))
        if overwrite and os.path.exists(out):
            shutil.rmtree(out)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    weights = os.path.join(out, bert_checkpoints.HF_WEIGHTS_FILE)
    count = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    return dict(
        metadata, weights={"file": weights, "count": count, "bytes": os.path.getsize(weights)}
    )


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Workdir of a pretraining run (config.json, checkpoints).")
    flags.DEFINE_string("out", None, "Folder to create with encoder.safetensors and encoder.json.")
    flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the newest good one).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder (atomically).")
    flags.DEFINE_enum(
        "layout", "ssl_jax", ["ssl_jax", "hf"], "ssl_jax: encoder.safetensors + encoder.json "
        "(models.load_encoder); hf: a BERT run as a Hugging Face BertForMaskedLM folder.",
    )  # fmt: skip
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        metadata = export(
            FLAGS.workdir, FLAGS.out, step=FLAGS.step, overwrite=FLAGS.overwrite,
            layout=FLAGS.layout,
        )  # fmt: skip
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    weights = metadata["weights"]
    print(
        f"exported {metadata['model']['name']} step {metadata['source']['step']} to {FLAGS.out}: "
        f"{weights['count']:,} parameters, {weights['bytes'] / 2**20:.2f} MiB",
        flush=True,
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
