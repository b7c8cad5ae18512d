"""python -m ssl_jax.main --config=configs/mae_fashion_mnist.py --workdir=workdirs/mae_fmnist

MAE on Fashion-MNIST sized for two CPU cores: ViT-Tiny at half its width and depth (96 x 6, 3
heads) with 4 px patches (7 x 7 of them), 75%
masked, a 2-block 64-wide decoder, the loss on standardised patches; AdamW (β2 0.95, weight
decay 0.05) with MAE's base rate scaled to this run's few epochs, crops of 20-100% and flips
only (He et al. 2022, arXiv:2111.06377, table 1 and appendix A.1, scaled down). The budget and
evaluation are the SimCLR default's (800 steps of 256, the same kNN monitor).
``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "mae")
    config.optimizer = "adamw"
    config.learning_rate = 1.5e-3
    config.lr_scaling = "linear"
    config.weight_decay = 0.05
    config.adam_b2 = 0.95
    config.warmup_epochs = 0.5
    config.model.name = "vit_tiny"
    config.model.patch_size = 4
    # Half ViT-Tiny's width and depth: the whole 12 x 192 model takes 3 s a step and 13 min a
    # kNN evaluation of the 70,000 images here.
    config.model.width = 96
    config.model.depth = 6
    config.model.num_heads = 3
    config.model.mlp_dim = 384
    # With 75% of the patches masked the decoder runs on 4x the encoder's tokens: at MAE's
    # 512 / 8 it would cost most of the step.
    config.mae.decoder_width = 64
    config.mae.decoder_depth = 2
    config.mae.decoder_heads = 2
    config.mae.decoder_mlp_dim = 256
    config.eval_every_steps = 800  # the kNN monitor at the start and the end: 3 min each here
    # MAE's augmentation: RandomResizedCrop(scale=(0.2, 1.0)) and a flip, no colour.
    config.augment.crop_scale = (0.2, 1.0)
    config.augment.jitter_prob = 0.0
    config.augment.grayscale_prob = 0.0
    config.augment.blur_prob = 0.0
    if args.runlocal:
        common.shrink_vit_for_runlocal(config)
    return config
