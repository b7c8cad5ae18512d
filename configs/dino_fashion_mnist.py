"""python -m ssl_jax.main --config=configs/dino_fashion_mnist.py --workdir=workdirs/dino_fmnist

DINO on Fashion-MNIST with MAE's small ViT (configs/mae_fashion_mnist.py: 96 wide, 6 blocks,
4 px patches) and the SimCLR default's budget (800 steps of 256). main_dino.py's recipe scaled to
28 px: 2 global crops of 40-100% and 4 local ones of 5-40% at 12 px, AdamW at 0.0005 x B/256,
weight decay 0.04 → 0.4, teacher momentum 0.99 → 1 (a short run), a 4096-prototype head
(512 wide, 64-d bottleneck), teacher temperature 0.04 → 0.07 over the first 30%, the last layer
frozen for the first 1%. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, mae_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = mae_fashion_mnist.get_config()
    common.use_method(config, "dino")
    config.learning_rate = 0.0005
    config.adam_b2 = 0.999  # torch's AdamW default, as main_dino.py
    config.weight_decay = 0.04
    config.weight_decay_end = 0.4
    config.clip_global_norm = 3.0
    config.augment.crop_scale = (0.4, 1.0)
    config.augment.jitter_prob = 0.8
    config.augment.grayscale_prob = 0.2
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    d = config.dino
    d.out_dim, d.hidden_dim, d.bottleneck_dim = 4096, 512, 64
    d.momentum = 0.99
    d.teacher_temp = 0.07
    d.teacher_temp_warmup_fraction = 0.3
    d.num_local_crops, d.local_crop_size = 4, 12
    if args.runlocal:
        common.shrink_vit_for_runlocal(config)
        d.num_local_crops, d.local_crop_size = 2, 12
    return config
