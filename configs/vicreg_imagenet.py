"""python -m ssl_jax.main --config=configs/vicreg_imagenet.py --workdir=gs://BUCKET/vicreg

VICReg with ResNet-50 (Bardes, Ponce & LeCun 2022, arXiv:2105.04906) as Appendix C.1
("Implementation details", ImageNet) and facebookresearch/vicreg main_vicreg.py set it:

- batch 2048, 1000 epochs, LARS with 10 warm-up epochs then cosine, base rate 0.2 x B/256
  (``--base-lr``), weight decay 1e-6 (``--wd``), biases and BN parameters excluded from decay and
  trust ratio; coefficients lambda = mu = 25, nu = 1 (``--sim-coeff``, ``--std-coeff``,
  ``--cov-coeff``);
- expander 2048 → 8192 → 8192 → 8192 (``--mlp 8192-8192-8192``): BN and ReLU after the first two
  layers, a plain linear output; variance and covariance over the global batch;
- BYOL's augmentations (augmentations.py ``TrainTransform``): crops of 8-100%, flip, colour
  jitter with probability 0.8, grayscale 0.2, blur 1.0 / 0.1, solarisation 0.0 / 0.2.

Differences: hidden layers without a bias before their BN; the schedule decays to 0
(main_vicreg.py: to 0.001 of the peak); colour jitter (0.4, 0.4, 0.4, 0.1) for (0.4, 0.4, 0.2,
0.1). ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=1000)
    config = common.imagenet(common.base())
    common.use_method(config, "vicreg")
    config.batch_size = 2048
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = 0.2
    config.weight_decay = 1e-6
    config.head.hidden_dim = 8192
    config.head.output_dim = 8192
    config.head.num_layers = 3
    config.head.last_bn = False
    config.head.last_bn_scale = False
    config.vicreg.sim_coeff = 25.0
    config.vicreg.std_coeff = 25.0
    config.vicreg.cov_coeff = 1.0
    config.augment.crop_scale = (0.08, 1.0)
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
