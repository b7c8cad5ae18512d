"""python -m ssl_jax.main --config=configs/vicreg_fashion_mnist.py --workdir=workdirs/vicreg_fmnist

VICReg on Fashion-MNIST with the budget, encoder, crops and augmentations of the SimCLR default
(configs/simclr_fashion_mnist.py), and solo-learn's CIFAR recipe
(scripts/pretrain/cifar/vicreg.yaml) for the rest: LARS at 0.3 per 256 examples, weight decay
1e-4, coefficients 25 / 25 / 1. Projector as the paper's, narrower: three layers
128 → 512 → 512 → 512, BN and ReLU after the first two, a plain linear output.
``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "vicreg")
    config.learning_rate = 0.3
    config.weight_decay = 1e-4
    config.head.hidden_dim = 512
    config.head.output_dim = 512
    config.head.num_layers = 3
    config.head.last_bn = False
    config.head.last_bn_scale = False
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
