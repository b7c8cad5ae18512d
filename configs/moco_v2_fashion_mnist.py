"""python -m ssl_jax.main --config=configs/moco_v2_fashion_mnist.py --workdir=workdirs/moco_v2_fmnist

MoCo v2 on Fashion-MNIST with the budget, encoder, optimiser and augmentations of the SimCLR
default (configs/simclr_fashion_mnist.py), so the two compare like for like: queue of 4096 keys,
temperature 0.2, momentum 0.99 (short runs need a faster key encoder than 0.999), shuffle BN in
ghost groups of 64. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "moco")
    config.temperature = 0.2
    config.moco.version = 2
    config.moco.momentum = 0.99
    config.moco.bn = "shuffle"
    config.moco.queue_size = 4096
    config.moco.bn_group_size = 64
    config.head.use_bn = False  # MoCo v2's MLP head has no BatchNorm
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
