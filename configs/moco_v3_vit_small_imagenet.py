"""python -m ssl_jax.main --config=configs/moco_v3_vit_small_imagenet.py --workdir=gs://BUCKET/moco_v3_vits

MoCo v3 with ViT-Small/16 (Chen, Xie, He 2021, arXiv:2104.02057): batch 4096, AdamW lr
1.5e-4 x B/256, weight decay 0.1, 40 warm-up epochs of 300, temperature 0.2, momentum 0.99 →
1 (cosine), 3-layer 4096-256 projector (last BN without affine parameters) and 2-layer
predictor with BN, frozen random patch projection, symmetric loss over keys of all devices,
each view through its own BN batch. Asymmetric views as main_moco.py: blur 1.0 / 0.1, the second
view solarised with probability 0.2.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=300)
    config = common.imagenet(common.base())
    common.use_method(config, "moco")
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 40.0
    config.optimizer = "adamw"
    config.learning_rate = 1.5e-4
    config.weight_decay = 0.1
    config.decay_all_params = True  # main_moco.py: AdamW(model.parameters(), weight_decay=...)
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
    config.head.last_bn_scale = False  # builder.py: BatchNorm1d(dim, affine=False)
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_vit_for_runlocal(config)
        config.image_size = 32
        config.model.patch_size = 8
    return config
