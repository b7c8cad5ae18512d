"""python -m ssl_jax.main --config=configs/simclr_imagenet.py:epochs=100 --workdir=gs://BUCKET/simclr_in1k

SimCLR on ImageNet (Chen et al. 2020): ResNet-50, global batch 4096, LARS with lr 0.3 x B/256,
weight decay 1e-6, temperature 0.1, colour jitter 1.0 and Gaussian blur, 10 warm-up epochs, 100 or
800 epochs (``:epochs=800``). ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=100)
    config = common.imagenet(common.base())
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.learning_rate = 0.3
    config.lr_scaling = "linear"
    config.weight_decay = 1e-6
    config.temperature = 0.1
    config.head.hidden_dim = 2048
    config.head.output_dim = 128
    config.augment.jitter_strength = 1.0
    config.augment.blur_prob = 0.5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    config.eval_every_steps = 12_500
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
