"""python -m ssl_jax.main --config=configs/dino_vit_small_imagenet.py --workdir=gs://BUCKET/dino_vits

DINO with ViT-Small/16 for 100 epochs (Caron et al. 2021, arXiv:2104.14294, section 4 and
appendix; main_dino.py's defaults): batch 1024, AdamW at 0.0005 x B/256 after 10 warm-up
epochs, cosine schedule, weight decay 0.04 → 0.4 by a cosine, teacher momentum 0.996 → 1,
K = 65536 prototypes after a 3-layer 2048-wide head with a 256-d bottleneck and a normalised
last layer frozen for the first epoch, center momentum 0.9, temperatures 0.1 (student) and 0.04
(teacher), 2 global crops of 40-100% at 224 px and 8 local ones of 5-40% at 96 px, blur 1.0 /
0.1 / 0.5, solarize 0.2 on the second global view. Differs from the reference: gradients clipped
to global norm 3.0 (main_dino.py clips each parameter's norm to 3.0), no stochastic depth, the
rate decays to 0 (not 1e-6), and the local crops are cut on the device from the host's two
global crops (areas 5-40% of a global crop), not from the full image.
``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=100)
    config = common.imagenet(common.base("dino"))
    config.batch_size = 1024
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "adamw"
    config.learning_rate = 0.0005
    config.lr_scaling = "linear"
    config.weight_decay = 0.04
    config.weight_decay_end = 0.4
    config.clip_global_norm = 3.0
    config.model.name = "vit_small"
    config.model.patch_size = 16
    config.augment.crop_scale = (0.4, 1.0)
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    config.dino.freeze_last_layer_fraction = 1 / 100
    config.dino.num_local_crops = 8
    config.dino.local_crop_size = 96
    if args.runlocal:
        common.shrink_vit_for_runlocal(config)
        config.image_size = 32
        config.model.patch_size = 8
        config.dino.num_local_crops, config.dino.local_crop_size = 2, 16
    return config
