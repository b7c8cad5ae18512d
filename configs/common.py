"""Defaults shared by every pretraining config, and the ``runlocal`` shrink for smoke runs.

A config file's ``get_config(arg)`` starts from ``base()`` and overrides what its recipe changes.
"""

from __future__ import annotations

import ml_collections

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses ``"runlocal,key=value"`` style config args into a ConfigDict of ``defaults``.

    Each value takes its default's type. Booleans are strict, since ``bool("False")`` is True:
    ``true``/``1`` or ``false``/``0`` in any case, and a bare ``key`` means True.

    >>> parse_arg("runlocal=False,epochs=300", runlocal=True, epochs=100).to_dict()
    {'epochs': 300, 'runlocal': False}
    """
    parsed = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, equals, value = item.partition("=")
        if key not in parsed:
            raise ValueError(f"unknown config arg {key!r}: use one of {sorted(parsed)}.")
        parsed[key] = _parse_value(key, value if equals else None, parsed[key])
    return parsed


def _parse_value(key: str, value: str | None, default):
    if isinstance(default, bool):
        if value is None or value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{key}={value!r}: a boolean config arg takes true, false, 1 or 0.")
    if value is None:
        raise ValueError(f"config arg {key!r} needs a value: {key}=<{type(default).__name__}>.")
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(
            f"{key}={value!r}: config arg {key!r} takes a {type(default).__name__}."
        ) from None


def core() -> ml_collections.ConfigDict:
    """The fields every run reads: data, optimiser, schedule, logging, checkpoints."""
    config = ml_collections.ConfigDict()
    config.method = "simclr"
    config.dataset = "fashion_mnist"
    config.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.shuffle_buffer = 50_000
    config.seed = 0
    config.overwrite = False  # continue a workdir whose saved config differs from this one
    config.dtype = "float32"
    config.parallelism = "shard_map"  # or "pmap": the driver of the per-device train step

    config.batch_size = 256  # global
    config.epochs = 100.0
    config.total_steps = ml_collections.FieldReference(None, field_type=int)  # wins over epochs
    config.optimizer = "lars"
    config.learning_rate = 0.3  # per 256 examples, scaled by lr_scaling
    config.lr_scaling = "linear"
    config.schedule = "cosine"  # or "linear", "bert_linear" (optim.make_schedule)
    config.warmup_epochs = 10.0
    config.weight_decay = 1e-6
    # Weight decay from weight_decay to this by a cosine over the run (DINO); None: constant.
    config.weight_decay_end = ml_collections.FieldReference(None, field_type=float)
    # Decay every parameter but frozen ones (torch's SGD(model.parameters(), weight_decay=...)),
    # instead of kernels and embeddings only (optim.decays).
    config.decay_all_params = False
    config.momentum = 0.9
    config.nesterov = True  # SGD only; False: plain heavy-ball momentum
    config.adam_b2 = 0.999
    config.adam_eps = 1e-8  # added to sqrt(v)
    config.adam_bias_correction = True  # False: google-research/bert's AdamWeightDecayOptimizer
    # Scale the gradient down to this global norm before the optimiser; None: no clipping.
    config.clip_global_norm = ml_collections.FieldReference(None, field_type=float)
    # Top-level parameter groups whose learning rate stays at its peak (SimSiam's predictor).
    config.fixed_lr_modules = ()

    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.eval_every_steps = 5000
    config.keep_checkpoints = 3
    # 0: a non-finite loss or gradient stops the run. K > 0: such a step is skipped (nothing
    # changes, the count is logged as skipped_steps), up to K in a row.
    config.skip_nonfinite_steps = 0
    # N > 0: a jax.profiler trace of N steps (from the second) in WORKDIR/profile, for TensorBoard.
    config.profile_steps = 0
    # PNGs in WORKDIR/plots (and TensorBoard) at the end of a run; python -m ssl_jax.report redraws.
    config.plots = True
    return config


def _image_fields(config: ml_collections.ConfigDict) -> None:
    """What every image run reads: images, encoder, projection head, views, kNN, probe."""
    config.image_size = ml_collections.FieldReference(None, field_type=int)
    config.cache_dataset = True
    config.model = ml_collections.ConfigDict(
        dict(
            name="resnet18",
            width_multiplier=1.0,
            stem="cifar",
            patch_size=16,
            freeze_patch_embed=False,
        )
    )
    # ViTs: width, depth, heads and MLP width; None keeps the named size (vit_tiny: 192, 12, 3,
    # 768).
    for field in ("width", "depth", "num_heads", "mlp_dim"):
        config.model[field] = ml_collections.FieldReference(None, field_type=int)
    # ResNets: convolutions rewritten for XLA:CPU in training (models.conv: stored inputs,
    # stride-2 gradients without dilation); None is on for the CPU backend only.
    config.model.cpu_conv_rewrites = ml_collections.FieldReference(None, field_type=bool)
    # The output layer's BN learns a scale (SimCLR's head); MoCo v3 sets last_bn_scale=False.
    config.head = ml_collections.ConfigDict(
        dict(
            hidden_dim=2048,
            output_dim=128,
            num_layers=2,
            use_bn=True,
            last_bn_scale=True,
        )
    )
    config.augment = ml_collections.ConfigDict(
        dict(
            crop_scale=(0.08, 1.0),
            jitter_strength=0.5,
            jitter_prob=0.8,
            grayscale_prob=0.2,
            blur_prob=0.0,
            solarize_prob=0.0,
            flip=True,
            # Fields that differ for the second view, e.g. blur_prob / solarize_prob.
            second_view=ml_collections.ConfigDict(),
        )
    )
    config.knn = ml_collections.ConfigDict(
        dict(
            k=200,
            temperature=0.1,
            batch_size=1024,
            max_memory_examples=ml_collections.FieldReference(None, field_type=int),
            max_test_examples=ml_collections.FieldReference(None, field_type=int),
        )
    )
    # Online linear probe on stop-gradient features, trained in the train step.
    config.probe = ml_collections.ConfigDict(dict(enabled=True, learning_rate=1e-3))


def _simclr(config: ml_collections.ConfigDict) -> None:
    config.temperature = 0.5
    # NT-Xent in blocks of this many anchors (exact, O(N x chunk) memory): None picks it above
    # losses.AUTO_CHUNK_MIN_LOGITS similarities, 0 never chunks.
    config.loss_chunk_size = ml_collections.FieldReference(None, field_type=int)
    # Gradient caching: the encoder runs this many views at a time, activations recomputed in the
    # backward pass, so large batches fit on few devices. None or 0: off. BN is per chunk.
    config.grad_cache_chunk_size = ml_collections.FieldReference(None, field_type=int)
    # "sum_over_views" is the reference code's loss_a + loss_b (twice the mean over the 2N
    # anchors); "mean" is that mean.
    config.nt_xent_reduction = "sum_over_views"
    _multi_crop(config)


def _multi_crop(config: ml_collections.ConfigDict) -> None:
    # Local views beside the two global ones (SwAV's multi-crop: 6 of 96 px from 5-14% of the
    # image); 0 keeps the papers' two views.
    config.multi_crop = ml_collections.ConfigDict(
        dict(num_local_crops=0, local_crop_size=96, local_crop_scale=(0.05, 0.14))
    )


def _predictor(config: ml_collections.ConfigDict) -> None:
    # last_bn: BN on the predictor's output (MoCo v3's ViT predictor; not its ResNet one).
    config.predictor = ml_collections.ConfigDict(dict(hidden_dim=4096, num_layers=2, last_bn=True))


def _moco(config: ml_collections.ConfigDict) -> None:
    config.temperature = 0.5
    config.moco = ml_collections.ConfigDict(
        dict(
            version=2,
            queue_size=65536,
            momentum=0.999,
            momentum_cosine=False,
            bn="shuffle",  # or "sync"
            bn_group_size=64,  # examples per BN group on one device (ghost BN)
            # v3: both views in one BN batch, instead of each view on its own (moco-v3).
            joint_view_bn=False,
        )
    )
    _predictor(config)  # v3's


def _projector(config: ml_collections.ConfigDict) -> None:
    config.head.last_bn = True  # BN on the projection


def _byol(config: ml_collections.ConfigDict) -> None:
    _projector(config)
    _predictor(config)
    # The target network: EMA momentum, rising to 1 by a cosine over the run.
    config.byol = ml_collections.ConfigDict(dict(momentum=0.996, momentum_cosine=True))
    _multi_crop(config)


def _simsiam(config: ml_collections.ConfigDict) -> None:
    _projector(config)
    _predictor(config)


def _barlow_twins(config: ml_collections.ConfigDict) -> None:
    _projector(config)
    # Off-diagonal weight lambda, and a factor on the whole loss.
    config.barlow_twins = ml_collections.ConfigDict(dict(lambda_offdiag=0.0051, scale=1.0))


def _vicreg(config: ml_collections.ConfigDict) -> None:
    _projector(config)
    # Invariance, variance and covariance weights (lambda, mu, nu).
    config.vicreg = ml_collections.ConfigDict(dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0))


def _mae(config: ml_collections.ConfigDict) -> None:
    # Patches hidden from the encoder, the loss on standardised patches, and the decoder (the
    # paper's ViT-B default: 512 wide, 8 blocks).
    config.mae = ml_collections.ConfigDict(
        dict(
            mask_ratio=0.75,
            norm_pix_loss=True,
            decoder_width=512,
            decoder_depth=8,
            decoder_heads=16,
            decoder_mlp_dim=2048,
        )
    )


def _dino(config: ml_collections.ConfigDict) -> None:
    # The head (K prototypes after a bottleneck), the teacher's EMA, centering and temperatures
    # (main_dino.py's defaults), and the local crops of multi-crop.
    config.dino = ml_collections.ConfigDict(
        dict(
            out_dim=65536,
            hidden_dim=2048,
            bottleneck_dim=256,
            num_layers=3,
            norm_last_layer=True,
            momentum=0.996,
            momentum_cosine=True,
            center_momentum=0.9,
            student_temp=0.1,
            warmup_teacher_temp=0.04,
            teacher_temp=0.04,
            teacher_temp_warmup_fraction=0.0,
            freeze_last_layer_fraction=0.01,
            num_local_crops=8,
            local_crop_size=96,
            local_crop_scale=(0.05, 0.4),
            local_blur_prob=0.5,
        )
    )


# The fields each image method reads beyond _image_fields, as defaults.
IMAGE_METHODS = {
    "simclr": _simclr,
    "moco": _moco,
    "byol": _byol,
    "simsiam": _simsiam,
    "barlow_twins": _barlow_twins,
    "vicreg": _vicreg,
    "mae": _mae,
    "dino": _dino,
}


def _paths(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict) and key in ("head", "model"):
            paths |= _paths(value, f"{prefix}{key}.")
        else:
            paths.add(prefix + key)
    return paths


def _section(method: str) -> set[str]:
    """The field paths ``method``'s section adds (head.last_bn, moco, predictor, ...)."""
    config = ml_collections.ConfigDict()
    _image_fields(config)
    before = _paths(config)
    IMAGE_METHODS[method](config)
    return _paths(config) - before


def use_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """Makes an image config ``method``'s: drops the fields only other methods read, adds this
    one's defaults where absent, and keeps every shared field as the config set it.

    >>> config = use_method(base(), "byol")
    >>> "byol" in config, "temperature" in config, config.head.last_bn
    (True, False, True)
    """
    if method not in IMAGE_METHODS:
        raise ValueError(f"use_method: {method!r} is not an image method {sorted(IMAGE_METHODS)}.")
    keep = _section(method)
    for other in IMAGE_METHODS:
        for path in _section(other) - keep:
            parent, _, name = path.rpartition(".")
            node = config[parent] if parent else config
            if name in node:
                del node[name]
    defaults = ml_collections.ConfigDict()
    _image_fields(defaults)
    IMAGE_METHODS[method](defaults)
    for path in keep:
        parent, _, name = path.rpartition(".")
        node = config[parent] if parent else config
        if name not in node:
            node[name] = (defaults[parent] if parent else defaults)[name]
    config.method = method
    return config


def base(method: str = "simclr") -> ml_collections.ConfigDict:
    """An image run of ``method``: the core fields, the image fields and the method's own."""
    config = core()
    _image_fields(config)
    IMAGE_METHODS[method](config)
    config.method = method
    return config


def imagenet(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 px in bfloat16 with a ResNet-50: what the published recipes share."""
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.dtype = "bfloat16"
    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.cache_dataset = False  # 140 GB of JPEGs do not fit in memory
    config.shuffle_buffer = 10_000
    config.knn.max_memory_examples = 50_000  # a fixed subset keeps the monitor cheap
    return config


def shrink_for_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A seconds-long run on a sliver of data that still logs, evaluates and checkpoints."""
    config.batch_size = 32
    config.total_steps = 4
    config.warmup_epochs = 0.0
    config.model.name = "resnet10"
    config.model.width_multiplier = 0.125
    config.head.hidden_dim = 64
    config.head.output_dim = 32
    if "predictor" in config:
        config.predictor.hidden_dim = 64
    if "moco" in config:
        config.moco.queue_size = 128
        config.moco.bn_group_size = 8
    config.knn.max_memory_examples = 512
    config.knn.max_test_examples = 256
    config.knn.batch_size = 256
    config.shuffle_buffer = 1024
    config.cache_dataset = False
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.eval_every_steps = 4
    config.plots = False  # seconds of plotting would double a smoke run; ssl_jax.report draws them
    return config


def shrink_vit_for_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``shrink_for_runlocal`` for a ViT method: a 32-wide 2-block ViT-Tiny, and MAE's decoder
    or DINO's head at the same scale. The patch size and image size stay the config's."""
    shrink_for_runlocal(config)
    config.model.name = "vit_tiny"
    config.model.width, config.model.depth, config.model.mlp_dim = 32, 2, 64
    config.model.num_heads = 2
    if "mae" in config:
        config.mae.decoder_width, config.mae.decoder_depth = 32, 1
        config.mae.decoder_heads, config.mae.decoder_mlp_dim = 2, 64
    if "dino" in config:
        config.dino.out_dim, config.dino.hidden_dim, config.dino.bottleneck_dim = 64, 32, 16
    return config


def text_base() -> ml_collections.ConfigDict:
    """Masked-language modelling: the core fields, BERT, WordPiece text, BERT's AdamW and schedule.

    Text runs count warm-up in steps (``warmup_steps``): an epoch of packed sequences is only
    known after tokenising the corpus. No image field (augmentations, kNN, probe) is here.
    """
    config = core()
    config.method = "mlm"
    config.dataset = "ptb"
    # google-research/bert optimization.py: AdamWeightDecayOptimizer (eps 1e-6, no bias
    # correction, decay 0.01 except LayerNorm and biases), gradients clipped to global norm 1.0,
    # learning rate linear from step 0 to the last, with warm-up replacing its first steps.
    config.optimizer = "adamw"
    config.schedule = "bert_linear"
    config.lr_scaling = "none"
    config.learning_rate = 1e-4
    config.weight_decay = 0.01
    config.adam_b2 = 0.999
    config.adam_eps = 1e-6
    config.adam_bias_correction = False
    config.clip_global_norm = 1.0
    config.warmup_steps = 10_000
    config.warmup_epochs = 0.0
    config.shuffle_buffer = 10_000  # packed sequences
    config.model = ml_collections.ConfigDict(
        dict(name="bert_base", dropout_rate=0.1, max_position=512)
    )
    config.text = ml_collections.ConfigDict(
        dict(
            max_seq_len=128,
            vocab_path=ml_collections.FieldReference(None, field_type=str),  # None: built one
            vocab_size=8192,  # target size when building a vocab
            lower_case=True,
            nsp=False,
            whole_word_masking=False,
        )
    )
    config.mlm = ml_collections.ConfigDict(
        dict(
            mask_rate=0.15,
            max_predictions=20,  # BERT: 20 for 128 tokens, 80 for 512
            eval_mask_seed=1234,
            eval_batch_size=256,
            max_eval_sequences=ml_collections.FieldReference(None, field_type=int),
            probe_max_seq_len=128,
        )
    )
    return config
