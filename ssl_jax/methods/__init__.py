"""Self-supervised methods. ``METHODS`` is the one table a config's ``method`` names.

Each entry is a module with ``make(config, image_size, bn_axis_name, *, total_steps)`` returning a
``Method``, ``validate(config, global_batch_size, device_count)`` raising ValueError on unusable
settings (per-device facts checked against each device's share of the batch), and ``MODALITY``,
the name of the ``ssl_jax.tasks`` modality it trains on ("image" or "text").
"""

from ssl_jax.core.method import Method
from ssl_jax.methods import barlow_twins, byol, dino, mae, mlm, moco, simclr, simsiam, vicreg

METHODS = {
    "simclr": simclr,
    "moco": moco,
    "mlm": mlm,
    "byol": byol,
    "simsiam": simsiam,
    "barlow_twins": barlow_twins,
    "vicreg": vicreg,
    "mae": mae,
    "dino": dino,
}

__all__ = [
    "METHODS",
    "Method",
    "barlow_twins",
    "byol",
    "dino",
    "mae",
    "mlm",
    "moco",
    "simclr",
    "simsiam",
    "vicreg",
]
