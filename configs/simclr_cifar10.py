"""python -m ssl_jax.main --config=configs/simclr_cifar10.py --workdir=workdirs/simclr_cifar10

SimCLR on CIFAR-10 as in the paper's CIFAR recipe (Chen et al. 2020, appendix B.9): ResNet-18 with
the CIFAR stem, batch 512, LARS with lr 1.0 x B/256, weight decay 1e-6, temperature 0.5, 800 epochs,
colour jitter strength 0.5, no blur. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = common.base()
    config.dataset = "cifar10"
    config.batch_size = 512
    config.epochs = 800.0
    config.warmup_epochs = 10.0
    config.learning_rate = 1.0
    config.weight_decay = 1e-6
    config.temperature = 0.5
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.head.hidden_dim = 2048
    config.head.output_dim = 128
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 0.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval_every_steps = 10_000
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
