"""python -m ssl_jax.main --config=configs/moco_v3_resnet50_imagenet.py --workdir=gs://BUCKET/moco_v3_r50

MoCo v3 with ResNet-50 (Chen, Xie, He 2021, arXiv:2104.02057) as facebookresearch/moco-v3 runs it:
CONFIG.md's "ResNet-50, 100-epoch pre-training" (``main_moco.py --moco-m-cos --crop-min=.2``, the
rest main_moco.py's defaults) with moco/builder.py's ``MoCo_ResNet`` heads.

- batch 4096 (``-b``), 100 epochs (``--epochs``), 10 warm-up epochs then half-cycle cosine
  (``--warmup-epochs``, ``adjust_learning_rate``);
- LARS (``--optimizer``), lr 0.6 x B/256 (``--lr``, scaled in main_moco.py), momentum 0.9
  (``--momentum``), weight decay 1e-6 (``--wd``); decay and trust ratio skip BN parameters
  (moco/optimizer.py skips rank <= 1; the MLPs' linear layers have no biases);
- temperature 1.0 (``--moco-t``), key-encoder momentum 0.99 rising to 1 by cosine (``--moco-m``,
  ``--moco-m-cos``), symmetric loss, sync BN (``SyncBatchNorm``);
- projector 2048 → 4096 → 256: two layers (``_build_mlp(2, hidden_dim, mlp_dim, dim)``,
  ``--moco-mlp-dim``, ``--moco-dim``), BN after each, the last without affine parameters;
  predictor 256 → 4096 → 256: two layers, no BN on its output (``last_bn=False``);
- random resized crops of 20-100% of the area (``--crop-min=.2``); main_moco.py's asymmetric
  views: Gaussian blur with probability 1.0 on the first view, 0.1 on the second, which is also
  solarised with probability 0.2 (``augmentation1``, ``augmentation2``).

300 epochs: ``:epochs=300,learning_rate=0.3``; 1000 epochs: ``:epochs=1000,learning_rate=0.3
--config.weight_decay=1.5e-6 --config.moco.momentum=0.996`` (CONFIG.md). One difference remains:
colour jitter (0.4, 0.4, 0.4, 0.1) (SimCLR's strength 0.5) for main_moco.py's (0.4, 0.4, 0.2,
0.1). ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False, epochs=100, learning_rate=0.6)
    config = common.imagenet(common.base())
    common.use_method(config, "moco")
    config.batch_size = 4096
    config.epochs = float(args.epochs)
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = float(args.learning_rate)
    config.weight_decay = 1e-6
    config.temperature = 1.0
    config.head.hidden_dim = 4096
    config.head.output_dim = 256
    config.head.num_layers = 2
    # The projector's last BN has neither scale nor offset (builder.py: BatchNorm1d(dim,
    # affine=False)).
    config.head.last_bn_scale = False
    config.predictor.hidden_dim = 4096
    config.predictor.num_layers = 2
    # MoCo_ResNet's predictor ends at its last linear layer, without BN (MoCo_ViT's keeps one).
    config.predictor.last_bn = False
    config.moco.version = 3
    config.moco.momentum = 0.99
    config.moco.momentum_cosine = True
    config.moco.bn = "sync"
    config.augment.crop_scale = (0.2, 1.0)
    config.augment.jitter_strength = 0.5
    config.augment.blur_prob = 1.0
    config.augment.second_view = ml_collections.ConfigDict(dict(blur_prob=0.1, solarize_prob=0.2))
    if args.runlocal:
        common.shrink_for_runlocal(config)
        config.image_size = 64
    return config
