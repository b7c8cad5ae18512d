"""python -m ssl_jax.main --config=configs/barlow_twins_fashion_mnist.py --workdir=workdirs/bt_fmnist

Barlow Twins on Fashion-MNIST with the budget, encoder, crops and augmentations of the SimCLR
default (configs/simclr_fashion_mnist.py), and solo-learn's CIFAR recipe
(scripts/pretrain/cifar/barlow.yaml) for the rest: LARS at 0.3 per 256 examples, weight decay
1e-4, lambda 0.0051, the loss scaled by 0.1. Projector as the paper's, narrower: three layers
128 → 512 → 512 → 512, BN and ReLU after the first two, none on the output (the loss
standardises it). ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "barlow_twins")
    config.learning_rate = 0.3
    config.weight_decay = 1e-4
    config.head.hidden_dim = 512
    config.head.output_dim = 512
    config.head.num_layers = 3
    config.head.last_bn = False
    config.head.last_bn_scale = False
    config.barlow_twins.lambda_offdiag = 0.0051
    config.barlow_twins.scale = 0.1
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
