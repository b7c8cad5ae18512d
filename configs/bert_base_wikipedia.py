"""python -m ssl_jax.main --config=configs/bert_base_wikipedia.py --workdir=workdirs/bert_base_wiki

BERT-base pretraining as published (Devlin et al. 2019): English Wikipedia from tfds, Google's
uncased vocab (``--config.text.vocab_path=.../uncased_L-12_H-768_A-12/vocab.txt``), batch 256,
1M steps: the first 90% on 128-token sequences (``phase=128``), the rest on 512 (``:phase=512``,
resumed in the same workdir with max_predictions 80). NSP on, as in the paper. The optimiser is
google-research/bert's (``common.text_base``): AdamW 1e-4 without bias correction (beta2 0.999,
eps 1e-6, decay 0.01 except LayerNorm and biases), gradients clipped to global norm 1.0, the rate
linear from 1e-4 at step 0 to 0 at 1M, with a 10k-step warm-up replacing its start.
``:runlocal`` shrinks it for a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, phase=128)
    config = common.text_base()
    config.dataset = "wikipedia"
    config.batch_size = 256
    config.total_steps = 1_000_000
    config.warmup_steps = 10_000
    config.learning_rate = 1e-4
    config.weight_decay = 0.01
    config.model.name = "bert_base"
    config.text.nsp = True
    config.text.vocab_size = 30522
    config.text.max_seq_len = args.phase
    config.mlm.max_predictions = 20 if args.phase == 128 else 80
    config.log_every_steps = 100
    config.checkpoint_every_steps = 10_000
    config.eval_every_steps = 50_000
    if args.runlocal:
        config.model.name = "bert_tiny"
        config.batch_size = 16
        config.total_steps = 4
        config.warmup_steps = 1
        config.mlm.max_eval_sequences = 64
        config.shuffle_buffer = 256
        config.log_every_steps = 1
        config.checkpoint_every_steps = 2
        config.eval_every_steps = 4
    return config
