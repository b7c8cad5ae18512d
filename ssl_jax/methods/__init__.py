"""Self-supervised methods; ``METHODS`` is the one table a config's ``method`` names."""

from ssl_jax.methods import simclr
from ssl_jax.methods.base import Method

METHODS = {"simclr": simclr.make}

__all__ = ["METHODS", "Method", "simclr"]
