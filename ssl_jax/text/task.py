"""The text modality: WordPiece corpora packed into sequences, the held-out MLM monitor, the BBC
News probe, plots of masked guesses."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from ssl_jax.core.task import Source, Task
from ssl_jax.text import data as text
from ssl_jax.text import fields

VOCAB_FILE = "vocab.txt"


def claims(name: str) -> bool:
    return name.split("/")[0] in text.DATASETS


def problem(config) -> str | None:
    """One line on why ``config``'s corpus or vocab cannot be read now, or None."""
    try:
        text.describe_config(config)
    except ValueError as error:
        return str(error)
    return text.missing_data_message(
        config.dataset, config.data_dir, vocab_path=config.text.vocab_path,
        vocab_size=config.text.vocab_size, lower_case=config.text.lower_case,
    )  # fmt: skip


def sample_batch(config, dataset: text.TextDataset, rows: int) -> dict[str, np.ndarray]:
    del dataset
    return {"token_ids": np.zeros((rows, config.text.max_seq_len), np.int32)}


def source(config, local_batch_size: int) -> Source:
    """The ``Source`` of a config ``problem`` passed."""
    from ssl_jax.text.evaluation import MlmMonitor  # evaluation imports the model stack

    dataset = text.describe_config(config)
    length = config.text.max_seq_len
    count = functools.partial(
        text.num_sequences, dataset, dataset.train_split, max_seq_len=length,
        process_index=jax.process_index(), process_count=jax.process_count(),
        data_dir=config.data_dir,
    )  # fmt: skip
    position = dict(
        local_batch_size=local_batch_size, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), shuffle_buffer=config.shuffle_buffer,
        data_dir=config.data_dir,
    )  # fmt: skip
    return Source(
        steps_per_epoch=lambda: max(1, count() // local_batch_size),
        image_size=None,
        sample_batch=sample_batch(config, dataset, local_batch_size),
        batches=lambda start: text.train_batches(
            dataset, max_seq_len=length, start_step=start, nsp=config.text.nsp, **position
        ),
        monitor=lambda mesh, workdir: MlmMonitor(config, dataset, mesh),
    )


def read_back_problem(config) -> str | None:
    """The vocab a finished run's model is built from, if it cannot be read."""
    try:
        text.describe_config(config).vocab()
    except ValueError as error:
        return str(error)
    return None


def bert_fields(config: Any, vocab: Any) -> dict[str, Any]:
    """The ``Bert`` constructor arguments of an MLM run (as ``methods.mlm.build_model``)."""
    from ssl_jax.models import bert

    sizes = dict(bert.BERTS[config.model.name].keywords)
    return dict(
        sizes,
        vocab_size=vocab.size,
        max_position=config.model.get("max_position", 512),
        dropout_rate=config.model.get("dropout_rate", 0.1),
        pad_id=vocab.pad_id,
        with_nsp=config.text.get("nsp", False),
    )


def export_encoder(run) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(variables, metadata, extra files) of a loaded MLM run's BERT, with its vocab file."""
    config = run.config
    vocab = run.dataset.vocab()
    fields = bert_fields(config, vocab)
    metadata = {
        "kind": "bert",
        "model": {"name": config.model.name},
        "dtype": config.get("dtype", "float32"),
        "bert": fields,
        "input": {"max_seq_len": config.text.max_seq_len, "vocab_file": VOCAB_FILE},
        "feature_dim": fields["hidden_size"],
    }
    variables = {"params": run.variables["params"], "batch_stats": {}}
    return variables, metadata, {VOCAB_FILE: run.dataset.vocab_path}


def _linear_eval(*args, **kwargs):
    from ssl_jax.text import linear

    return linear.bbc_probe(*args, **kwargs)


def plots() -> dict:
    from ssl_jax.text import report  # matplotlib, on first use

    return report.PLOTS


TASK = Task(
    name="text",
    claims=claims,
    dataset_hint=f": use one of {sorted(text.DATASETS)}",
    problem=problem,
    source=source,
    describe=text.describe_config,
    image_size=lambda dataset: None,
    sample_batch=sample_batch,
    read_back_problem=read_back_problem,
    linear_eval=_linear_eval,
    plots=plots,
    export_encoder=export_encoder,
    fields=fields.TEXT,
)
