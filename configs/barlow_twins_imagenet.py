"""python -m ssl_jax.main --config=configs/barlow_twins_imagenet.py --workdir=gs://BUCKET/bt

Barlow Twins with ResNet-50 (Zbontar et al. 2021, arXiv:2103.03230) as section 3
("Implementation details") and facebookresearch/barlowtwins main.py set it:

- batch 2048, 1000 epochs, LARS with 10 warm-up epochs then cosine, base rate 0.2 x B/256 for
  the weights, momentum 0.9, weight decay 1.5e-6, biases and BN parameters excluded from decay
  and trust ratio; lambda 0.0051 (``--lambd``);
- projector 2048 → 8192 → 8192 → 8192 (``--projector 8192-8192-8192``): BN and ReLU after the
  first two layers, the affine-free synchronised BN on the output done by the loss's
  standardisation over the global batch;
- BYOL's augmentations (the paper's Appendix, main.py's ``Transform``): crops of 8-100%, flip,
  colour jitter with probability 0.8, grayscale 0.2, blur 1.0 / 0.1, solarisation 0.0 / 0.2.

Differences: biases and BN parameters share the weights' rate (main.py gives them 0.0048 x
B/256); the schedule decays to 0 (main.py: to 0.001 of the peak); colour jitter (0.4, 0.4, 0.4,
0.1) for (0.4, 0.4, 0.2, 0.1). ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=1000)
    config = common.imagenet(common.base())
    common.use_method(config, "barlow_twins")
    config.batch_size = 2048
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = 0.2
    config.weight_decay = 1.5e-6
    config.head.hidden_dim = 8192
    config.head.output_dim = 8192
    config.head.num_layers = 3
    config.head.last_bn = False
    config.head.last_bn_scale = False
    config.barlow_twins.lambda_offdiag = 0.0051
    config.barlow_twins.scale = 1.0
    config.augment.crop_scale = (0.08, 1.0)
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
