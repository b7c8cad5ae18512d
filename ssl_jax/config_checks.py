"""Every config field a run reads, with the values it may take: one table per kind of run.

``problem(config)`` names the first field out of range, or set but unread, in one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_collections

from ssl_jax import tasks
from ssl_jax.core import optim
from ssl_jax.methods import METHODS
from ssl_jax.methods.simclr import REDUCTIONS
from ssl_jax.models import BERTS, ENCODERS
from ssl_jax.models.resnet import STEMS
from ssl_jax.vision.augment import simclr_augment

DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field may hold: ``accepts(value)``, and ``allowed`` saying it in words."""

    allowed: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _or_none(rule: Rule, none: str | None, allowed: str | None) -> Rule:
    if none is None:
        return Rule(allowed or rule.allowed, rule.accepts)
    return Rule(
        allowed or f"{rule.allowed}, or None ({none})",
        lambda value: value is None or rule.accepts(value),
    )


def integer(low: int | None = None, *, none: str | None = None, allowed: str | None = None) -> Rule:
    """An int >= ``low``; ``none`` says what None means where None is allowed."""
    words = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(
        low, f"an integer >= {low}"
    )
    rule = Rule(words, lambda value: _is_int(value) and (low is None or value >= low))
    return _or_none(rule, none, allowed)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    none: str | None = None,
    allowed: str | None = None,
) -> Rule:
    """A finite int or float in the interval from ``low`` to ``high``, each end open or closed."""
    if low is not None and high is not None:
        words = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        words = f"{'>' if low_open else '>='} {low:g}"
    else:
        words = "a finite number"

    def accepts(value: Any) -> bool:
        if not _is_number(value):
            return False
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    return _or_none(Rule(words, accepts), none, allowed)


def one_of(choices: Any, *, none: str | None = None) -> Rule:
    choices = tuple(choices)
    words = "one of " + ", ".join(repr(choice) for choice in choices)
    rule = Rule(words, lambda value: isinstance(value, str) and value in choices)
    return _or_none(rule, none, None)


def string(*, none: str | None = None) -> Rule:
    return _or_none(Rule("a string", lambda value: isinstance(value, str) and value), none, None)


BOOL = Rule("True or False", lambda value: isinstance(value, bool))
OPTIONAL_BOOL = _or_none(BOOL, "the backend decides", None)
PROBABILITY = number(0, 1)
FRACTION_OF_ONE = number(0, 1, high_open=True)  # momenta and decay rates: 1 would never move


def _crop_scale(value: Any) -> bool:
    try:
        low, high = value
    except (TypeError, ValueError):
        return False
    return _is_number(low) and _is_number(high) and 0 < low <= high <= 1


CROP_SCALE = Rule("a pair (low, high) with 0 < low <= high <= 1", _crop_scale)

# The fields of one SimCLR view (augment.simclr_augment's keywords), also the ones the second view
# may change (augment.second_view).
VIEW = {
    "augment.crop_scale": CROP_SCALE,
    "augment.jitter_strength": number(0),
    "augment.jitter_prob": PROBABILITY,
    "augment.grayscale_prob": PROBABILITY,
    "augment.blur_prob": PROBABILITY,
    "augment.solarize_prob": PROBABILITY,
    "augment.flip": BOOL,
}


def _second_view(value: Any) -> bool:
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        return False
    known = set(inspect.signature(simclr_augment).parameters) - {"rng", "image", "out_size"}
    return all(
        key in known and VIEW[f"augment.{key}"].accepts(field) for key, field in value.items()
    )


SECOND_VIEW = Rule(
    "a dict of view fields that differ for view 2 ("
    + ", ".join(name.split(".")[1] for name in VIEW)
    + "), each in its field's range",
    _second_view,
)

# Read by every run: the trainer, loop, optimiser, checkpoints and data source.
SHARED: dict[str, Rule] = {
    "method": one_of(METHODS),
    "dataset": string(),
    "data_dir": string(none="the tfds default"),
    "shuffle_buffer": integer(1),
    "seed": integer(0),
    "overwrite": BOOL,
    "dtype": one_of(DTYPES),
    "parallelism": one_of(("shard_map", "pmap")),
    "batch_size": integer(1),
    "epochs": number(0, low_open=True),
    "total_steps": integer(0, none="from epochs"),
    "optimizer": one_of(OPTIMIZERS),
    "learning_rate": number(0, low_open=True),
    "lr_scaling": one_of(LR_SCALINGS),
    "schedule": one_of(optim.SCHEDULES),
    "warmup_epochs": number(0),
    "warmup_steps": integer(0),
    "weight_decay": number(0),
    "decay_all_params": BOOL,
    "momentum": FRACTION_OF_ONE,
    "nesterov": BOOL,
    "adam_b2": FRACTION_OF_ONE,
    "adam_eps": number(0, low_open=True),
    "adam_bias_correction": BOOL,
    "clip_global_norm": number(0, low_open=True, none="no clipping"),
    "fixed_lr_modules": Rule(
        "a tuple of top-level parameter names (e.g. ('predictor',)), or () for none",
        lambda value: (
            isinstance(value, (tuple, list))
            and all(isinstance(name, str) and name for name in value)
        ),
    ),
    "model.name": one_of({**ENCODERS, **BERTS}),
    "log_every_steps": integer(1),
    "checkpoint_every_steps": integer(1),
    "eval_every_steps": integer(1),
    "keep_checkpoints": integer(1),
    "skip_nonfinite_steps": integer(0),
    "profile_steps": integer(0),
    "plots": BOOL,
}

# Read by the image methods: image data, encoder, projection head, augmentations, kNN monitor and
# the online probe.
IMAGE: dict[str, Rule] = {
    "image_size": integer(1, none="the dataset's own"),
    "cache_dataset": BOOL,
    "model.name": one_of(ENCODERS),
    "model.width_multiplier": number(0, low_open=True),
    "model.stem": one_of(STEMS),
    "model.patch_size": integer(1),
    "model.freeze_patch_embed": BOOL,
    "model.cpu_conv_rewrites": OPTIONAL_BOOL,
    "head.hidden_dim": integer(1),
    "head.output_dim": integer(1),
    "head.num_layers": integer(1),
    "head.use_bn": BOOL,
    "head.last_bn_scale": BOOL,
    **VIEW,
    "augment.second_view": SECOND_VIEW,
    "knn.k": integer(1),
    "knn.temperature": number(0, low_open=True),
    "knn.batch_size": integer(1),
    "knn.max_memory_examples": integer(1, none="the whole split"),
    "knn.max_test_examples": integer(1, none="the whole split"),
    "probe.enabled": BOOL,
    "probe.learning_rate": number(0, low_open=True),
}

SIMCLR: dict[str, Rule] = {
    "temperature": number(0, low_open=True),
    "nt_xent_reduction": one_of(REDUCTIONS),
    "loss_chunk_size": integer(0, none="chosen by size"),
    "grad_cache_chunk_size": integer(0, none="off"),
}

MOCO: dict[str, Rule] = {
    "temperature": number(0, low_open=True),
    "moco.version": Rule("2 or 3", lambda value: _is_int(value) and value in (2, 3)),
    "moco.queue_size": integer(1),
    "moco.momentum": FRACTION_OF_ONE,
    "moco.momentum_cosine": BOOL,
    "moco.bn": one_of(("shuffle", "sync")),
    "moco.bn_group_size": integer(1),
    "moco.joint_view_bn": BOOL,
    "predictor.hidden_dim": integer(1),
    "predictor.num_layers": integer(1),
    "predictor.last_bn": BOOL,
}

# The two-view methods without negatives (methods.siamese): projector, and predictor if any.
_PROJECTOR: dict[str, Rule] = {"head.last_bn": BOOL}
_PREDICTOR: dict[str, Rule] = {
    "predictor.hidden_dim": integer(1),
    "predictor.num_layers": integer(1),
    "predictor.last_bn": BOOL,
}
BYOL: dict[str, Rule] = {
    **_PROJECTOR,
    **_PREDICTOR,
    "byol.momentum": FRACTION_OF_ONE,
    "byol.momentum_cosine": BOOL,
}
SIMSIAM: dict[str, Rule] = {**_PROJECTOR, **_PREDICTOR}
BARLOW_TWINS: dict[str, Rule] = {
    **_PROJECTOR,
    "barlow_twins.lambda_offdiag": number(0),
    "barlow_twins.scale": number(0, low_open=True),
}
VICREG: dict[str, Rule] = {
    **_PROJECTOR,
    "vicreg.sim_coeff": number(0),
    "vicreg.std_coeff": number(0),
    "vicreg.cov_coeff": number(0),
}

# Read by text runs, and by linear_eval's BBC probe from the run's config.json (mlm.probe_*).
TEXT: dict[str, Rule] = {
    "model.name": one_of(BERTS),
    "model.dropout_rate": number(0, 1, high_open=True),
    "model.max_position": integer(1),
    "text.max_seq_len": integer(8, allowed="an integer >= 8 ([CLS] A [SEP] B [SEP] and text)"),
    "text.vocab_path": string(none="the vocab prepare builds"),
    "text.vocab_size": integer(1),
    "text.lower_case": BOOL,
    "text.nsp": BOOL,
    "text.whole_word_masking": BOOL,
    "mlm.mask_rate": number(0, 1, low_open=True, high_open=True),
    "mlm.max_predictions": integer(1),
    "mlm.eval_mask_seed": integer(0),
    "mlm.eval_batch_size": integer(1),
    "mlm.max_eval_sequences": integer(1, none="the whole split"),
    "mlm.probe_max_seq_len": integer(8),
}

# A method's fields: the later tables refine the earlier ones (model.name).
TABLES: dict[str, tuple[dict[str, Rule], ...]] = {
    "simclr": (SHARED, IMAGE, SIMCLR),
    "moco": (SHARED, IMAGE, MOCO),
    "mlm": (SHARED, TEXT),
    "byol": (SHARED, IMAGE, BYOL),
    "simsiam": (SHARED, IMAGE, SIMSIAM),
    "barlow_twins": (SHARED, IMAGE, BARLOW_TWINS),
    "vicreg": (SHARED, IMAGE, VICREG),
}

# The sections a method's config must hold (configs.common gives each method its own): without
# one, the method would fail on a missing field after compiling.
SECTIONS: dict[str, tuple[str, ...]] = {
    "simclr": ("augment", "knn"),
    "moco": ("augment", "knn", "moco", "predictor"),
    "byol": ("augment", "knn", "byol", "predictor"),
    "simsiam": ("augment", "knn", "predictor"),
    "barlow_twins": ("augment", "knn", "barlow_twins"),
    "vicreg": ("augment", "knn", "vicreg"),
    "mlm": ("text", "mlm"),
}


def rules_for(method: str) -> dict[str, Rule]:
    """The fields a ``method`` run reads, each with its rule."""
    rules: dict[str, Rule] = {}
    for table in TABLES[method]:
        rules.update(table)
    return rules


def _leaves(config: ml_collections.ConfigDict, known: set[str], prefix: str = "") -> Iterator:
    """``(dotted path, value)`` of every field; a table's ConfigDict-valued field is one leaf."""
    for key in sorted(config.keys()):
        path, value = prefix + key, config[key]
        if isinstance(value, ml_collections.ConfigDict) and path not in known:
            yield from _leaves(value, known, path + ".")
        else:
            yield path, value


def _lookup(config: ml_collections.ConfigDict, path: str) -> tuple[bool, Any]:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _plain(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        return value.to_dict()
    if isinstance(value, list):
        return tuple(value)
    return value


def preset_configs(method: str) -> list[ml_collections.ConfigDict]:
    """``configs.common``'s presets for ``method``: a field that holds one of their values was
    not set by the config (the runlocal shrink sizes fields every config holds). configs/ is not
    part of the installed package; without it the presets are empty and only fields out of range
    or unread are reported."""
    try:
        common = importlib.import_module("configs.common")
    except ImportError:
        return []
    if method == "mlm":
        return [common.text_base()]
    return [
        common.base(method),
        common.imagenet(common.base(method)),
        common.shrink_for_runlocal(common.base(method)),
    ]


def _readers(path: str) -> list[str]:
    return [method for method in TABLES if path in rules_for(method)]


def field_problem(config: ml_collections.ConfigDict) -> str | None:
    """The first field out of its rule's range, or set where this method does not read it.

    "Set" means holding a value none of the method's presets (``preset_configs``) hold. A
    config without a section its method reads (``SECTIONS``) is refused first.
    """
    method = config.get("method")
    if method not in TABLES:
        return f"method={method!r} must be {one_of(TABLES).allowed}."
    missing = [name for name in SECTIONS[method] if name not in config]
    if missing:
        return (
            f"method={method!r} reads the {missing[0]!r} fields, which this config does not hold: "
            f"start from a {method} config (configs/) or configs.common.use_method(config, "
            f"{method!r})."
        )
    rules = rules_for(method)
    every_field = {path for tables in TABLES.values() for table in tables for path in table}
    presets = preset_configs(method)
    for path, value in _leaves(config, every_field):
        rule = rules.get(path)
        if rule is not None:
            if not rule.accepts(value):
                return f"{path}={_plain(value)!r} must be {rule.allowed}."
            continue
        held = [_lookup(preset, path) for preset in presets]
        if any(found and _plain(default) == _plain(value) for found, default in held):
            continue
        readers = _readers(path)
        if readers:
            default = next((default for found, default in held if found), None)
            return (
                f"{path}={_plain(value)!r} is set, but a {method} run does not read it "
                f"(only {', '.join(readers)} runs do): remove it"
                + (f" or leave it at {_plain(default)!r}." if default is not None else ".")
            )
        return f"{path}={_plain(value)!r} is not a field any run reads: remove it."
    return None


def combination_problem(config: ml_collections.ConfigDict) -> str | None:
    """Fields each in range that cannot go together (checked after ``field_problem``)."""
    mismatch = tasks.mismatch(config.method, config.dataset)
    if mismatch:
        return mismatch
    total_steps, warmup_steps = config.get("total_steps"), config.get("warmup_steps") or 0
    if total_steps and warmup_steps >= total_steps:
        return (
            f"warmup_steps={warmup_steps} must be fewer than total_steps={total_steps}: the run "
            "would end before its warm-up does."
        )
    if total_steps is None and not warmup_steps and config.warmup_epochs >= config.epochs:
        return (
            f"warmup_epochs={config.warmup_epochs} must be fewer than epochs={config.epochs}: "
            "the run would end before its warm-up does."
        )
    return None


def problem(config: ml_collections.ConfigDict) -> str | None:
    """One line naming the field to change, value and what is allowed, or None if all fit."""
    return field_problem(config) or combination_problem(config)


# configs/linear_eval.py's fields, as ssl_jax.linear_eval reads them.
_ALL = "positive, or None for all"
LINEAR_EVAL: dict[str, Rule] = {
    "step": integer(0, none="the newest checkpoint"),
    "data_dir": string(none="the run's"),
    "epochs": integer(1),
    "batch_size": integer(1),
    "learning_rate": number(0, low_open=True),
    "optimizer": one_of(OPTIMIZERS),
    "momentum": FRACTION_OF_ONE,
    "weight_decay": number(0),
    "seed": integer(0),
    "feature_batch_size": integer(1),
    "max_train_examples": integer(1, none="all", allowed=_ALL),
    "max_test_examples": integer(1, none="all", allowed=_ALL),
    "compare_random_init": BOOL,
    "compare_pixels": BOOL,
    "bbc_max_articles": integer(1, none="all", allowed=_ALL),
}


def linear_eval_problem(config: ml_collections.ConfigDict) -> str | None:
    """``problem`` for a linear-evaluation config: a field out of range, or one nothing reads."""
    for path, value in _leaves(config, set(LINEAR_EVAL)):
        rule = LINEAR_EVAL.get(path)
        if rule is None:
            return f"{path}={_plain(value)!r} is not a field linear evaluation reads: remove it."
        if not rule.accepts(value):
            return f"{path}={_plain(value)!r} must be {rule.allowed}."
    return None
