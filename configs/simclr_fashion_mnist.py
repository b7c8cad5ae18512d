"""python -m ssl_jax.main --config=configs/simclr_fashion_mnist.py --workdir=workdirs/simclr_fmnist

SimCLR on Fashion-MNIST sized for two CPU cores (~9 minutes, 800 steps of 256): a quarter-width
ResNet-10 with a stride-2 3x3 stem, grey-image augmentations (crop of 50-100% of the area, flip,
brightness/contrast), LARS, temperature 0.2. Crops down to 8% (the ImageNet recipe) cut away too
much of a 28 px garment for so short a run. ``:runlocal`` shrinks it to a seconds-long smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = common.base()
    config.dataset = "fashion_mnist"
    config.batch_size = 256
    config.total_steps = 800
    config.warmup_epochs = 0.5
    config.learning_rate = 1.0
    config.weight_decay = 1e-5
    config.temperature = 0.2
    config.model.name = "resnet10"
    config.model.width_multiplier = 0.25
    config.model.stem = "small"
    config.head.hidden_dim = 256
    config.head.output_dim = 64
    config.augment.crop_scale = (0.5, 1.0)
    config.augment.jitter_strength = 0.5
    config.knn.batch_size = 2048
    config.log_every_steps = 50
    config.checkpoint_every_steps = 200
    config.eval_every_steps = 400
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
