"""Optimisers and learning-rate schedules built from a config, all from optax.

Weight decay and LARS trust ratios skip BatchNorm parameters and biases.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def decay_mask(params: Any) -> Any:
    """True for weight matrices and kernels; False for biases, norm parameters and frozen ones.

    Parameters under a name containing ``frozen`` get no gradient (their module stops it) and
    must not shrink by weight decay either.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim > 1 and "frozen" not in jax.tree_util.keystr(path), params
    )


def peak_learning_rate(base_learning_rate: float, batch_size: int, scaling: str) -> float:
    """Scales a per-256-examples base rate to the global batch ("linear", "sqrt" or "none").

    >>> peak_learning_rate(0.3, 4096, "linear")  # SimCLR's LARS recipe
    4.8
    """
    if scaling == "linear":
        return base_learning_rate * batch_size / 256
    if scaling == "sqrt":
        return base_learning_rate * (batch_size**0.5)
    if scaling == "none":
        return base_learning_rate
    raise ValueError(f"lr_scaling must be 'linear', 'sqrt' or 'none'; got {scaling!r}.")


def make_schedule(
    peak_value: float, total_steps: int, warmup_steps: int, kind: str = "cosine"
) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak_value``, then cosine (or linear) decay to 0.

    >>> schedule = make_schedule(1.0, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(step)), 3) for step in (0, 5, 10, 55, 100)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if warmup_steps == 0 and kind in ("cosine", "linear"):
        # optax warns about a zero-length warm-up piece; without one the decay is all there is.
        if kind == "cosine":
            return optax.cosine_decay_schedule(peak_value, max(total_steps, 1))
        return optax.linear_schedule(peak_value, 0.0, max(total_steps, 1))
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak_value, warmup_steps, decay_steps=max(total_steps, warmup_steps + 1)
        )
    if kind == "linear":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, peak_value, warmup_steps),
                optax.linear_schedule(peak_value, 0.0, max(total_steps - warmup_steps, 1)),
            ],
            [warmup_steps],
        )
    raise ValueError(f"schedule must be 'cosine' or 'linear'; got {kind!r}.")


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    weight_decay: float,
    momentum: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """LARS (SimCLR's choice for large batches), SGD with momentum, or AdamW.

    Weight decay (and LARS's trust ratio) skip biases, BatchNorm parameters and frozen ones.

    >>> import jax.numpy as jnp
    >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    >>> tx = make_optimizer("sgd", optax.constant_schedule(0.0), weight_decay=0.1)
    >>> updates, _ = tx.update(params, tx.init(params), params)  # lr 0: only the decay term
    >>> float(updates["kernel"][0, 0]), float(updates["bias"][0])
    (-0.0, -0.0)
    """
    if name == "lars":
        return optax.lars(
            schedule,
            weight_decay=weight_decay,
            weight_decay_mask=decay_mask,
            trust_ratio_mask=decay_mask,
            momentum=momentum,
        )
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=momentum, nesterov=True),
        )
    if name == "adamw":
        return optax.adamw(schedule, b2=b2, weight_decay=weight_decay, mask=decay_mask)
    raise ValueError(f"optimizer must be 'lars', 'sgd' or 'adamw'; got {name!r}.")


def from_config(config: Any, total_steps: int, warmup_steps: int):
    """``(schedule, optimizer)`` as a run config's optimiser fields describe them."""
    peak = peak_learning_rate(config.learning_rate, config.batch_size, config.lr_scaling)
    schedule = make_schedule(peak, total_steps, warmup_steps, config.schedule)
    tx = make_optimizer(
        config.optimizer, schedule, weight_decay=config.weight_decay, momentum=config.momentum
    )
    return schedule, tx
