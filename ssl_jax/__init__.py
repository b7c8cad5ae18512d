"""ssl_jax: self-supervised learning in JAX/Flax: SimCLR, MoCo v2/v3, BERT masked-language models.

The notebook API: pure functions and linen modules, usable without the trainer::

    import ssl_jax as sj
    loss = sj.losses.nt_xent(z1, z2, temperature=0.5)
    loss = sj.losses.info_nce(q, k, queue, temperature=0.2)
    input_ids, positions, labels, weights = sj.masking.mask_tokens(rng, token_ids, ...)
    view1, view2 = sj.augment.simclr_views(rng, images)
    encoder = sj.models.ResNet18(stem="cifar")
    step = sj.train.make_train_step(method, tx, mesh)
"""

from ssl_jax import augment, checkpoint, losses, masking, models, optim, parallel, train
from ssl_jax.evaluation import knn
from ssl_jax.state import TrainState

__all__ = [
    "TrainState",
    "augment",
    "checkpoint",
    "knn",
    "losses",
    "masking",
    "models",
    "optim",
    "parallel",
    "train",
]
