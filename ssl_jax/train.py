"""The trainer with every registered method and modality plugged in: what ``ssl_jax.main`` runs.

``ssl_jax.core.train`` is the trainer itself; this module picks the method a config names
(``ssl_jax.methods.METHODS``), the modality that method trains on (``ssl_jax.tasks``), the field
rules (``ssl_jax.config_checks``) and the report drawn at the end.
"""

from __future__ import annotations

from etils import epy

from ssl_jax.core.state import TrainState
from ssl_jax.core.train import (
    ConfigError,
    create_state,
    guarded_optimizer,
    make_train_step,
    nonfinite_arrays,
    train_step,
)
from ssl_jax.methods import METHODS

with epy.lazy_imports():
    import ml_collections

    from ssl_jax import config_checks, report, tasks
    from ssl_jax.core import train as core_train

__all__ = [
    "ConfigError",
    "TrainState",
    "create_state",
    "guarded_optimizer",
    "make_train_step",
    "nonfinite_arrays",
    "run",
    "train_step",
    "validate_config",
]


def _plugged(config: ml_collections.ConfigDict) -> dict:
    if config.method not in METHODS:
        raise ConfigError(f"unknown method {config.method!r}: use one of {sorted(METHODS)}.")
    return dict(
        method_module=METHODS[config.method],
        task=tasks.of_method(config.method),
        field_problem=config_checks.problem,
    )


def validate_config(config: ml_collections.ConfigDict, device_count: int) -> None:
    """``ssl_jax.core.train.validate_config`` with the config's method and modality."""
    core_train.validate_config(config, device_count, **_plugged(config))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrains as ``config`` says, resuming from ``workdir`` if it holds a checkpoint.

    Returns the final metrics (loss and the monitor's scores).
    """
    return core_train.run(config, workdir, **_plugged(config), report=report.write)
