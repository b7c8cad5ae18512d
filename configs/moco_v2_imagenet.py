"""python -m ssl_jax.main --config=configs/moco_v2_imagenet.py:epochs=200 --workdir=gs://BUCKET/moco_v2

MoCo v2 (Chen et al. 2020, arXiv:2003.04297): ResNet-50, batch 256, queue 65536, momentum 0.999,
temperature 0.2, SGD lr 0.03 x B/256 with cosine decay, weight decay 1e-4, MLP head without BN,
SimCLR augmentations with jitter 0.4 and blur, shuffle BN; 200 or 800 epochs. The optimiser is
facebookresearch/moco main_moco.py's ``torch.optim.SGD(model.parameters(), lr, momentum=0.9,
weight_decay=1e-4)``: plain momentum, and decay of every parameter, BN and biases included
(``--config.nesterov=True --config.decay_all_params=False`` for Nesterov without that decay).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=200)
    config = common.imagenet(common.base())
    common.use_method(config, "moco")
    config.batch_size = 256
    config.epochs = float(args.epochs)
    config.warmup_epochs = 0.0
    config.optimizer = "sgd"
    config.nesterov = False
    config.learning_rate = 0.03
    config.weight_decay = 1e-4
    config.decay_all_params = True
    config.temperature = 0.2
    config.head.hidden_dim = 2048
    config.head.output_dim = 128
    config.head.use_bn = False
    config.moco.version = 2
    config.moco.queue_size = 65536
    config.moco.momentum = 0.999
    config.moco.bn = "shuffle"
    config.augment.jitter_strength = 0.5  # torchvision ColorJitter(0.4, 0.4, 0.4, 0.1)
    config.augment.crop_scale = (0.2, 1.0)
    config.augment.blur_prob = 0.5
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
