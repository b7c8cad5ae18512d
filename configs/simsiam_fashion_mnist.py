"""python -m ssl_jax.main --config=configs/simsiam_fashion_mnist.py --workdir=workdirs/simsiam_fmnist

SimSiam on Fashion-MNIST with the budget, encoder, crops and augmentations of the SimCLR
default (configs/simclr_fashion_mnist.py), and solo-learn's CIFAR recipe
(scripts/pretrain/cifar/simsiam.yaml) for the optimiser: SGD (momentum 0.9, no Nesterov, decay on
every parameter as torch's SGD) at 0.5 per 256 examples, weight decay 1e-5, the predictor's rate
fixed at the peak (``--fix-pred-lr``). Heads as in the paper's CIFAR setting scaled down: a
two-layer projector 128 → 256 → 256 ending in an affine-free BN, a bottleneck predictor
256 → 64 → 256. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "simsiam")
    config.optimizer = "sgd"
    config.nesterov = False
    config.decay_all_params = True
    config.learning_rate = 0.5
    config.weight_decay = 1e-5
    config.fixed_lr_modules = ("predictor",)
    config.head.hidden_dim = 256
    config.head.output_dim = 256
    config.head.num_layers = 2
    config.head.last_bn = True
    config.head.last_bn_scale = False
    config.predictor.hidden_dim = 64
    config.predictor.num_layers = 2
    config.predictor.last_bn = False
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
