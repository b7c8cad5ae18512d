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

Importing ssl_jax sets one XLA flag for CPU convolutions (``ssl_jax/xla_defaults.py``), so
import it before the first JAX computation; ``SSL_JAX_XLA_DEFAULTS=0`` turns that off.
"""

from ssl_jax import xla_defaults

# Before anything starts JAX's backend: XLA reads XLA_FLAGS once.
xla_defaults.apply()

from ssl_jax import (  # noqa: E402
    augment,
    checkpoint,
    losses,
    masking,
    methods,
    models,
    optim,
    parallel,
    probe,
    train,
)
from ssl_jax.data import images  # noqa: E402
from ssl_jax.evaluation import classifier, features, knn, linear, plots, pretrained  # noqa: E402
from ssl_jax.state import TrainState  # noqa: E402

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
