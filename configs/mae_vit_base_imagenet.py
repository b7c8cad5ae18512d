"""python -m ssl_jax.main --config=configs/mae_vit_base_imagenet.py --workdir=gs://BUCKET/mae_vitb

MAE with ViT-Base/16 (He et al. 2022, arXiv:2111.06377, appendix A.1, table 8): batch 4096,
AdamW with base rate 1.5e-4 x B/256, β2 0.95, weight decay 0.05, cosine schedule after 40
warm-up epochs of 800, 75% of the patches masked, the loss on standardised patches, a decoder
512 wide with 8 blocks (16 heads), RandomResizedCrop(scale 0.2-1) and flips, no colour
augmentation. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=800)
    config = common.imagenet(common.base("mae"))
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 40.0
    config.optimizer = "adamw"
    config.learning_rate = 1.5e-4
    config.lr_scaling = "linear"
    config.weight_decay = 0.05
    config.adam_b2 = 0.95
    config.model.name = "vit_base"
    config.model.patch_size = 16
    config.mae.mask_ratio = 0.75
    config.mae.norm_pix_loss = True
    config.mae.decoder_width = 512
    config.mae.decoder_depth = 8
    config.mae.decoder_heads = 16
    config.mae.decoder_mlp_dim = 2048
    config.augment.crop_scale = (0.2, 1.0)
    config.augment.jitter_prob = 0.0
    config.augment.grayscale_prob = 0.0
    config.augment.blur_prob = 0.0
    config.augment.flip = True
    if args.runlocal:
        common.shrink_vit_for_runlocal(config)
        config.image_size = 32
        config.model.patch_size = 8
    return config
