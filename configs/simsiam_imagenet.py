"""python -m ssl_jax.main --config=configs/simsiam_imagenet.py --workdir=gs://BUCKET/simsiam

SimSiam with ResNet-50 (Chen & He 2021, arXiv:2011.10566) as section 4's baseline settings and
facebookresearch/simsiam (``main_simsiam.py --fix-pred-lr``, builder.py) set it:

- batch 512, 100 epochs, SGD with momentum 0.9 (no Nesterov) at 0.05 x B/256, cosine decay
  without warm-up, weight decay 1e-4 on every parameter (torch's SGD); the predictor's rate
  fixed at 0.05 x B/256 (``--fix-pred-lr``, Table 1's "pred. fixed lr");
- projector: three layers 2048 → 2048 → 2048 → 2048, BN after each, the last BN without affine
  parameters; predictor 2048 → 512 → 2048, BN and ReLU after the hidden layer; symmetric
  negative-cosine loss with stop-gradient, synchronised BN;
- MoCo v2's augmentations: crops of 20-100%, colour jitter (0.4, 0.4, 0.4, 0.1) with
  probability 0.8, grayscale 0.2, Gaussian blur with probability 0.5, flip.

Differences: the predictor's output layer has no bias (builder.py's has one).
``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=100)
    config = common.imagenet(common.base())
    common.use_method(config, "simsiam")
    config.batch_size = 512
    config.epochs = float(args.epochs)
    config.warmup_epochs = 0.0
    config.optimizer = "sgd"
    config.nesterov = False
    config.decay_all_params = True
    config.momentum = 0.9
    config.learning_rate = 0.05
    config.weight_decay = 1e-4
    config.fixed_lr_modules = ("predictor",)
    config.head.hidden_dim = 2048
    config.head.output_dim = 2048
    config.head.num_layers = 3
    config.head.last_bn = True
    config.head.last_bn_scale = False
    config.predictor.hidden_dim = 512
    config.predictor.num_layers = 2
    config.predictor.last_bn = False
    config.augment.crop_scale = (0.2, 1.0)
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 0.5
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
