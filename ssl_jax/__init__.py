"""ssl_jax: self-supervised learning in JAX/Flax: SimCLR, MoCo v2/v3, BERT masked-language models.

The notebook API: pure functions and linen modules, usable without the trainer::

    import ssl_jax as sj
    loss = sj.losses.nt_xent(z1, z2, temperature=0.5)
    loss = sj.losses.info_nce(q, k, queue, temperature=0.2)
    input_ids, positions, labels, weights = sj.masking.mask_tokens(rng, token_ids, ...)
    view1, view2 = sj.augment.simclr_views(rng, images)
    encoder = sj.models.ResNet18(stem="cifar")
    step = sj.train.make_train_step(method, tx, mesh)
    bank, labels = sj.features.extract_features(method.encode, variables, images, labels, mesh,
                                                batch_size=512)
    top1 = sj.knn.knn_accuracy(bank, labels, queries, query_labels, num_classes=10)
    run = sj.pretrained.load("workdirs/fm")  # config, method and weights of a finished run
    weights = sj.classifier.train_classifier(features, labels, num_classes=10, epochs=100,
                                             batch_size=1024, learning_rate=0.1)

A walk-through: notebooks/quickstart.ipynb.

Importing ssl_jax imports no TensorFlow (submodules load when first used) and, for the CPU
backend only, sets one XLA flag for convolutions (``ssl_jax/xla_defaults.py``), so import it
before the first JAX computation; ``SSL_JAX_XLA_DEFAULTS=0`` turns that off.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ssl_jax import xla_defaults

# Before anything starts JAX's backend: XLA reads XLA_FLAGS once.
xla_defaults.apply()

# Submodules load on first attribute access (PEP 562), so ``import ssl_jax`` stays cheap and
# imports neither TensorFlow nor tfds, clu or ml_collections: the losses, models, augmentations
# and train step then run on a machine that has JAX alone. Only the input pipeline, the
# evaluation writers and the trainer's run() need the rest.
_SUBMODULES = {
    "TrainState": "ssl_jax.core.state",
    "augment": "ssl_jax.vision.augment",
    "checkpoint": "ssl_jax.core.checkpoint",
    "classifier": "ssl_jax.evaluation.classifier",
    "features": "ssl_jax.evaluation.features",
    "images": "ssl_jax.vision.data",
    "knn": "ssl_jax.evaluation.knn",
    "linear": "ssl_jax.evaluation.linear",
    "losses": "ssl_jax.losses",
    "masking": "ssl_jax.masking",
    "methods": "ssl_jax.methods",
    "models": "ssl_jax.models",
    "optim": "ssl_jax.core.optim",
    "parallel": "ssl_jax.core.parallel",
    "plots": "ssl_jax.evaluation.plots",
    "pretrained": "ssl_jax.evaluation.pretrained",
    "probe": "ssl_jax.core.probe",
    "train": "ssl_jax.train",
}

__all__ = [
    "TrainState",
    "augment",
    "checkpoint",
    "classifier",
    "features",
    "images",
    "knn",
    "linear",
    "losses",
    "masking",
    "methods",
    "models",
    "optim",
    "parallel",
    "plots",
    "pretrained",
    "probe",
    "train",
]


def __getattr__(name: str):
    if name not in _SUBMODULES:
        raise AttributeError(f"module 'ssl_jax' has no attribute {name!r}")
    module = importlib.import_module(_SUBMODULES[name])
    value = getattr(module, name) if name == "TrainState" else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


if TYPE_CHECKING:
    from ssl_jax import losses, masking, methods, models, train
    from ssl_jax.core import checkpoint, optim, parallel, probe
    from ssl_jax.core.state import TrainState
    from ssl_jax.evaluation import classifier, features, knn, linear, plots, pretrained
    from ssl_jax.vision import augment
    from ssl_jax.vision import data as images
