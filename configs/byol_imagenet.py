"""python -m ssl_jax.main --config=configs/byol_imagenet.py --workdir=gs://BUCKET/byol

BYOL with ResNet-50 (Grill et al. 2020, arXiv:2006.07733) as the paper's ImageNet recipe sets it:

- Appendix C ("Optimization"): batch 4096, 1000 epochs, LARS with a cosine schedule after 10
  warm-up epochs, base rate 0.2 x B/256, momentum 0.9, weight decay 1.5e-6, biases and BN
  parameters excluded from decay and trust ratio; target momentum from 0.996 to 1 by
  ``1 - (1 - 0.996)(cos(pi k / K) + 1) / 2``, updated once per optimiser step;
- Section 3.3 and Appendix A: projector 2048 → 4096 → 256 and predictor 256 → 4096 → 256, BN and
  ReLU after the hidden layer only; symmetric loss, synchronised BN;
- Table 6 (Appendix B): crops of 8-100% of the area, flip, colour jitter with probability 0.8,
  grayscale 0.2, Gaussian blur with probability 1.0 on the first view and 0.1 on the second,
  solarisation 0.0 and 0.2.

300 epochs (Table 8's other length): ``:epochs=300,learning_rate=0.3
--config.weight_decay=1e-6 --config.byol.momentum=0.99`` (the deepmind/byol 300-epoch config).
Differences: colour jitter (0.4, 0.4, 0.4, 0.1) for Table 6's (0.4, 0.4, 0.2, 0.1); hidden
layers without a bias before their BN (the BN offset replaces it) and no bias on the output
layers; the schedule decays to 0. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=1000, learning_rate=0.2)
    config = common.imagenet(common.base())
    common.use_method(config, "byol")
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = float(args.learning_rate)
    config.weight_decay = 1.5e-6
    config.head.hidden_dim = 4096
    config.head.output_dim = 256
    config.head.num_layers = 2
    config.head.last_bn = False
    config.head.last_bn_scale = False
    config.predictor.hidden_dim = 4096
    config.predictor.num_layers = 2
    config.predictor.last_bn = False
    config.byol.momentum = 0.996
    config.byol.momentum_cosine = True
    config.augment.crop_scale = (0.08, 1.0)
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
