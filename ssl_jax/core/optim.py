"""Optimisers and learning-rate schedules built from a config, all from optax.

Weight decay and LARS trust ratios skip biases, norm parameters and frozen ones.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

# A module whose name says it normalises: flax's LayerNorm_0 / BatchNorm_1, ssl_jax's ffn_norm,
# final_norm, stem_bn.
_NORM_MODULE = re.compile(r"norm|(^|_)bn(\d|_|$)", re.IGNORECASE)


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _frozen(path: tuple[Any, ...]) -> bool:
    return any("frozen" in _key_name(key) for key in path)


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
    if _frozen(path):
        return False
    *modules, leaf = [_key_name(key) for key in path] or [""]
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


SCHEDULES = ("cosine", "linear", "bert_linear")


def make_schedule(
    peak_value: float, total_steps: int, warmup_steps: int, kind: str = "cosine"
) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak_value``, then decay to 0 at ``total_steps``.

    ``kind``: "cosine" or "linear" decay over the steps after warm-up; or "bert_linear",
    google-research/bert's: linear decay from ``peak_value`` at step 0 to 0 at ``total_steps``,
    with the warm-up ramp replacing its first ``warmup_steps`` (so the rate drops from nearly
    ``peak_value`` to ``peak_value * (1 - warmup_steps / total_steps)`` when warm-up ends).

    >>> schedule = make_schedule(1.0, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(step)), 3) for step in (0, 5, 10, 55, 100)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> schedule = make_schedule(1.0, total_steps=100, warmup_steps=10, kind="bert_linear")
    >>> [round(float(schedule(step)), 3) for step in (0, 5, 9, 10, 55, 100)]
    [0.0, 0.5, 0.9, 0.9, 0.45, 0.0]
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {kind!r}.")
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if kind == "bert_linear":
        decay = optax.linear_schedule(peak_value, 0.0, max(total_steps, 1))
        if warmup_steps == 0:
            return decay

        def bert_linear(step):
            return jnp.where(step < warmup_steps, peak_value * step / warmup_steps, decay(step))

        return bert_linear
    if warmup_steps == 0:
        # optax warns about a zero-length warm-up piece; without one the decay is all there is.
        if kind == "cosine":
            return optax.cosine_decay_schedule(peak_value, max(total_steps, 1))
        return optax.linear_schedule(peak_value, 0.0, max(total_steps, 1))
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak_value, warmup_steps, decay_steps=max(total_steps, warmup_steps + 1)
        )
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_value, warmup_steps),
            optax.linear_schedule(peak_value, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        [warmup_steps],
    )


def scale_by_adam_without_bias_correction(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6
) -> optax.GradientTransformation:
    """Adam's direction ``m / (sqrt(v) + eps)`` from the raw moments, as google-research/bert.

    ``optax.scale_by_adam`` always divides the moments by ``1 - b**t``; BERT's
    ``AdamWeightDecayOptimizer`` does not, so with b1 = 0.9, b2 = 0.999 its early updates are
    ``(1 - b1**t) / sqrt(1 - b2**t)`` times Adam's (3.2 at step 1, 6.5 at step 10, 1.3 at step
    1,000), which BERT's 10k warm-up steps absorb. The state is ``optax.ScaleByAdamState``.

    References:
      google-research/bert ``optimization.py``, ``AdamWeightDecayOptimizer.apply_gradients``.
    """

    def init_fn(params):
        return optax.scale_by_adam(b1, b2, eps).init(params)

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        count = optax.safe_increment(state.count)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _not_frozen(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, _: not _frozen(path), params)


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    weight_decay: float | optax.Schedule,
    momentum: float = 0.9,
    nesterov: bool = True,
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correction: bool = True,
    decay_all_params: bool = False,
    clip_global_norm: float | None = None,
) -> optax.GradientTransformation:
    """LARS (SimCLR's choice for large batches), SGD with momentum, or AdamW.

    Weight decay (and LARS's trust ratio) skip biases, norm parameters and frozen ones
    (``decays``). AdamW's decay is decoupled (``weight_decay * param`` added to Adam's direction,
    times the learning rate, as in BERT); SGD's and LARS's is added to the gradient.

    Args:
      name: "lars", "sgd" or "adamw".
      schedule: the learning rate of each step.
      weight_decay: the decay coefficient, or a schedule of it (SGD and AdamW only).
      momentum: SGD's and LARS's momentum.
      nesterov: SGD only: Nesterov momentum, or plain heavy-ball momentum (torch's default).
      b2, eps: AdamW's second-moment decay and the epsilon added to ``sqrt(v)``.
      bias_correction: AdamW: divide the moments by ``1 - b**t`` (Adam), or not
        (google-research/bert, ``scale_by_adam_without_bias_correction``).
      decay_all_params: decay every parameter except frozen ones, biases and norm parameters
        included, as ``torch.optim.SGD(model.parameters(), weight_decay=...)`` does; LARS's trust
        ratio still skips biases and norm parameters.
      clip_global_norm: first scale the gradient down to this global norm (BERT: 1.0); None: off.

    >>> import jax.numpy as jnp
    >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    >>> tx = make_optimizer("sgd", optax.constant_schedule(2.0), weight_decay=0.5, nesterov=False)
    >>> grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> # -lr * (grad + decay * param) for the kernel; the bias is not decayed: -lr * grad.
    >>> updates["kernel"].tolist(), updates["bias"].tolist()
    ([[-1.5, -1.5], [-1.5, -1.5]], [-0.5, -0.5])
    """
    weight_decay_mask = _not_frozen if decay_all_params else decay_mask
    if callable(weight_decay) and name == "lars":
        raise ValueError("a weight-decay schedule needs optimizer 'sgd' or 'adamw', not 'lars'.")
    if name == "lars":
        tx = optax.lars(
            schedule,
            weight_decay=weight_decay,
            weight_decay_mask=weight_decay_mask,
            trust_ratio_mask=decay_mask,
            momentum=momentum,
        )
    elif name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
            optax.sgd(schedule, momentum=momentum, nesterov=nesterov),
        )
    elif name == "adamw" and bias_correction:
        tx = optax.adamw(
            schedule, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask
        )
    elif name == "adamw":
        # optax.adamw's chain with the uncorrected moments: the same state layout.
        tx = optax.chain(
            scale_by_adam_without_bias_correction(b2=b2, eps=eps),
            optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
            optax.scale_by_learning_rate(schedule),
        )
    else:
        raise ValueError(f"optimizer must be 'lars', 'sgd' or 'adamw'; got {name!r}.")
    if clip_global_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_global_norm), tx)
    return tx


def _cosine_between(start: float, end: float, total_steps: int) -> optax.Schedule:
    """``end + (start - end)(1 + cos(pi t / T)) / 2``: start at step 0, end at step T.

    >>> schedule = _cosine_between(0.04, 0.4, 10)
    >>> [round(float(schedule(t)), 4) for t in (0, 5, 10, 20)]
    [0.04, 0.22, 0.4, 0.4]
    """

    def schedule(step):
        progress = jnp.minimum(step / max(total_steps, 1), 1.0)
        return end + (start - end) * (1.0 + jnp.cos(jnp.pi * progress)) / 2.0

    return schedule


def from_config(config: Any, total_steps: int, warmup_steps: int):
    """``(schedule, optimizer)`` as a run config's optimiser fields describe them.

    A config without the newer fields (``nesterov``, ``adam_*``, ``decay_all_params``,
    ``clip_global_norm``) gets what they default to, the behaviour from before they existed.
    """
    peak = peak_learning_rate(config.learning_rate, config.batch_size, config.lr_scaling)
    schedule = make_schedule(peak, total_steps, warmup_steps, config.schedule)
    fixed = tuple(config.get("fixed_lr_modules", ()) or ())
    clip = config.get("clip_global_norm")

    weight_decay = config.weight_decay
    if config.get("weight_decay_end") is not None:
        # DINO's cosine from weight_decay at step 0 to weight_decay_end at the last step.
        weight_decay = _cosine_between(config.weight_decay, config.weight_decay_end, total_steps)

    def optimizer(schedule, clip_global_norm):
        return make_optimizer(
            config.optimizer,
            schedule,
            weight_decay=weight_decay,
            momentum=config.momentum,
            nesterov=config.get("nesterov", True),
            b2=config.get("adam_b2", 0.999),
            eps=config.get("adam_eps", 1e-8),
            bias_correction=config.get("adam_bias_correction", True),
            decay_all_params=config.get("decay_all_params", False),
            clip_global_norm=clip_global_norm,
        )

    if not fixed:
        return schedule, optimizer(schedule, clip)
    # SimSiam's --fix-pred-lr: the named groups keep the peak rate; clipping sees every group.
    tx = optax.multi_transform(
        {"scheduled": optimizer(schedule, None), "fixed": optimizer(lambda _: peak, None)},
        functools.partial(fixed_lr_labels, fixed),
    )
    if clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return schedule, tx


def fixed_lr_labels(modules: tuple[str, ...], params: Any) -> Any:
    """ "fixed" for parameters under a top-level name in ``modules``, "scheduled" for the rest.

    >>> fixed_lr_labels(("predictor",), {"encoder": 1.0, "predictor": {"kernel": 2.0}})
    {'encoder': 'scheduled', 'predictor': {'kernel': 'fixed'}}
    """
    names = {_key_name(path[0]) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    missing = sorted(set(modules) - names)
    if missing:
        raise ValueError(
            f"fixed_lr_modules names {missing}, which are not parameter groups of this model: "
            f"use some of {sorted(names)}."
        )
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "fixed" if _key_name(path[0]) in modules else "scheduled", params
    )
