"""Optimisers and learning-rate schedules built from a config, all from optax.

Weight decay and LARS trust ratios skip biases, norm parameters and frozen ones.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import optax


# A module whose name says it normalises: flax's LayerNorm_0 / BatchNorm_1, ssl_jax's ffn_norm,
# final_norm, stem_bn.
_NORM_MODULE = re.compile(r"norm|(^|_)bn(\d|_|$)", re.IGNORECASE)


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def decays(path: tuple[Any, ...]) -> bool:
    """Whether weight decay applies to the parameter at ``path``, judged by what it is.

    Decayed: kernels and embeddings (word, position, segment, [CLS]), as google-research/bert's
    ``AdamWeightDecayOptimizer`` does. Not decayed: every bias (``bias``, ``mlm_bias``, the
    [heads, head_dim] q/k/v biases of attention's ``DenseGeneral``), a norm's ``scale`` and
    anything else under a norm module, and parameters under a name containing ``frozen``, which
    get no gradient (their module stops it) and must not shrink by weight decay either.

    >>> from jax.tree_util import DictKey
    >>> decays((DictKey("attention"), DictKey("query"), DictKey("bias")))
    False
    >>> decays((DictKey("word_embeddings"), DictKey("embedding")))
    True
    """
    names = [_key_name(key) for key in path]
    *modules, leaf = names or [""]
    if any("frozen" in name for name in names):
        return False
    if leaf == "bias" or leaf.endswith("_bias") or leaf == "scale":
        return False
    return not any(_NORM_MODULE.search(module) for module in modules)


def decay_mask(params: Any) -> Any:
    """True for kernels and embeddings; False for biases, norm parameters and frozen ones.

    Judged by name (``decays``), not rank: attention's q/k/v biases are [heads, head_dim].
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


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

    Weight decay (and LARS's trust ratio) skip biases, norm parameters and frozen ones (``decays``).

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
    skips = config.get("skip_nonfinite_steps", 0)
    if skips:
        # Counts non-finite gradients in the optimiser state (so a resumed run keeps the count)
        # and leaves the inner state untouched on those steps; the train step keeps the rest.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=skips)
    return schedule, tx
