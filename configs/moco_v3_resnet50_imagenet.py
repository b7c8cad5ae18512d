"""python -m ssl_jax.main --config=configs/moco_v3_resnet50_imagenet.py --workdir=gs://BUCKET/moco_v3_r50

MoCo v3 with ResNet-50 (Chen, Xie, He 2021): batch 4096, LARS lr 0.6 x B/256 for 100 epochs
(0.3 for 300, ``:epochs=300,learning_rate=0.3``), weight decay 1.5e-6, temperature 1.0, momentum
0.99 → 1 (cosine), 3-layer projector and 2-layer predictor with BN, symmetric loss, sync BN.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=100, learning_rate=0.6)
    config = common.imagenet(common.base())
    config.method = "moco"
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = float(args.learning_rate)
    config.weight_decay = 1.5e-6
    config.temperature = 1.0
    config.head.hidden_dim = 4096
    config.head.output_dim = 256
    config.head.num_layers = 3
    config.predictor.hidden_dim = 4096
    config.predictor.num_layers = 2
    config.moco.version = 3
    config.moco.momentum = 0.99
    config.moco.momentum_cosine = True
    config.moco.bn = "sync"
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 0.5
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
