"""python -m ssl_jax.main --config=configs/bert_large_wikipedia.py --workdir=workdirs/bert_large_wiki

BERT-large (24 layers, 1024 wide, 16 heads): the BERT-base recipe (Wikipedia, batch 256, AdamW
1e-4, 10k warm-up, 1M steps, seq 128 then ``:phase=512``) with the larger model; bfloat16 compute.
"""

import ml_collections

from configs import bert_base_wikipedia, common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, phase=128)
    config = bert_base_wikipedia.get_config(arg)
    if not args.runlocal:
        config.model.name = "bert_large"
        config.dtype = "bfloat16"
    return config
