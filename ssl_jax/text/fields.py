"""The fields a text run reads (BERT, corpus, masking, held-out evaluation), with their rules."""

from __future__ import annotations

from ssl_jax.core.fields import BOOL, Rule, integer, number, one_of, string
from ssl_jax.models import BERTS

# Read by text runs, and by linear_eval's BBC probe from the run's config.json (mlm.probe_*).
TEXT: dict[str, Rule] = {
    "model.name": one_of(BERTS),
    "model.dropout_rate": number(0, 1, high_open=True),
    "model.max_position": integer(1),
    "text.max_seq_len": integer(8, allowed="an integer >= 8 ([CLS] A [SEP] B [SEP] and text)"),
    "text.vocab_path": string(none="the vocab prepare builds"),
    "text.vocab_size": integer(1),
    "text.lower_case": BOOL,
    "text.nsp": BOOL,
    "text.whole_word_masking": BOOL,
    "mlm.mask_rate": number(0, 1, low_open=True, high_open=True),
    "mlm.max_predictions": integer(1),
    "mlm.eval_mask_seed": integer(0),
    "mlm.eval_batch_size": integer(1),
    "mlm.max_eval_sequences": integer(1, none="the whole split"),
    "mlm.probe_max_seq_len": integer(8),
}
