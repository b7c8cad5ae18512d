"""python -m ssl_jax.main --config=configs/byol_fashion_mnist.py --workdir=workdirs/byol_fmnist

BYOL on Fashion-MNIST with the budget, encoder and crops of the SimCLR default
(configs/simclr_fashion_mnist.py: 800 steps of 256, quarter-width ResNet-10), and
solo-learn's CIFAR recipe (scripts/pretrain/cifar/byol.yaml) for what short runs need: LARS at
1.0 per 256 examples, weight decay 1e-5, target momentum 0.99 rising to 1 by a cosine. The
heads follow BYOL's shapes scaled down: projector 128 → 256 → 64 (BN in the hidden layer only),
predictor 64 → 256 → 64; BYOL's asymmetric views (blur 1.0 / 0.1, solarize 0.0 / 0.2).
``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common, simclr_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = simclr_fashion_mnist.get_config()
    common.use_method(config, "byol")
    config.learning_rate = 1.0
    config.weight_decay = 1e-5
    config.head.num_layers = 2
    config.head.last_bn = False
    config.head.last_bn_scale = False
    config.predictor.hidden_dim = 256
    config.predictor.num_layers = 2
    config.predictor.last_bn = False
    config.byol.momentum = 0.99
    config.byol.momentum_cosine = True
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_for_runlocal(config)
    return config
