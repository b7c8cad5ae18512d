"""python -m ssl_jax.main --config=configs/moco_v3_vit_small_imagenet.py --workdir=gs://BUCKET/moco_v3_vits

MoCo v3 with ViT-Small/16 (Chen, Xie, He 2021, arXiv:2104.02057): batch 4096, AdamW lr
1.5e-4 x B/256, weight decay 0.1, 40 warm-up epochs of 300, temperature 0.2, momentum 0.99 →
1 (cosine), 3-layer 4096-256 projector and 2-layer predictor with BN, frozen random patch
projection, symmetric loss over keys of all devices.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=300)
    config = common.imagenet(common.base())
    config.method = "moco"
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 40.0
    config.optimizer = "adamw"
    config.learning_rate = 1.5e-4
    config.weight_decay = 0.1
    config.temperature = 0.2
    config.model.name = "vit_small"
    config.model.patch_size = 16
    config.model.freeze_patch_embed = True
    config.head.hidden_dim = 4096
    config.head.output_dim = 256
    config.head.num_layers = 3
    config.predictor.hidden_dim = 4096
    config.predictor.num_layers = 2
    config.moco.version = 3
    config.moco.momentum = 0.99
    config.moco.momentum_cosine = True
    config.moco.bn = "sync"
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 0.5
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 32
        config.model.name = "vit_tiny"
        config.model.patch_size = 8
    return config
