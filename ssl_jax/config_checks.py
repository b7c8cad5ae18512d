"""Every config field a run reads, with the values it may take: one table per kind of run.

The shared and per-method tables are here; each modality's own are beside it (``IMAGE`` from
``vision/fields.py``, ``TEXT`` from ``text/fields.py``, also its ``Task.fields``).

``problem(config)`` names the first field out of range, or set but unread, in one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import ml_collections

from ssl_jax import tasks
from ssl_jax.core import optim
from ssl_jax.core.fields import (
    BOOL,
    FRACTION_OF_ONE,
    PROBABILITY,
    Rule,
    _is_int,
    integer,
    number,
    one_of,
    string,
)
from ssl_jax.methods import METHODS
from ssl_jax.methods.simclr import REDUCTIONS
from ssl_jax.models import BERTS, ENCODERS, VITS
from ssl_jax.text import fields as text_fields
from ssl_jax.vision import fields as image_fields

DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")


CROP_SCALE, VIEW, SECOND_VIEW = image_fields.CROP_SCALE, image_fields.VIEW, image_fields.SECOND_VIEW


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
    "weight_decay_end": number(0, none="constant"),
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

# The modalities' own fields (vision/fields.py, text/fields.py).
IMAGE: dict[str, Rule] = image_fields.IMAGE
TEXT: dict[str, Rule] = text_fields.TEXT


# Local views beside the two global ones (SimCLR, BYOL).
_MULTI_CROP: dict[str, Rule] = {
    "multi_crop.num_local_crops": integer(0),
    "multi_crop.local_crop_size": integer(1),
    "multi_crop.local_crop_scale": image_fields.CROP_SCALE,
}
SIMCLR: dict[str, Rule] = {
    "temperature": number(0, low_open=True),
    "nt_xent_reduction": one_of(REDUCTIONS),
    "loss_chunk_size": integer(0, none="chosen by size"),
    "grad_cache_chunk_size": integer(0, none="off"),
    **_MULTI_CROP,
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
    **_MULTI_CROP,
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

MAE: dict[str, Rule] = {
    "model.name": one_of(tuple(VITS)),
    "mae.mask_ratio": number(0, 1, low_open=True, high_open=True),
    "mae.norm_pix_loss": BOOL,
    "mae.decoder_width": integer(4),
    "mae.decoder_depth": integer(1),
    "mae.decoder_heads": integer(1),
    "mae.decoder_mlp_dim": integer(1),
}

DINO: dict[str, Rule] = {
    "dino.out_dim": integer(1),
    "dino.hidden_dim": integer(1),
    "dino.bottleneck_dim": integer(1),
    "dino.num_layers": integer(1),
    "dino.norm_last_layer": BOOL,
    "dino.momentum": FRACTION_OF_ONE,
    "dino.momentum_cosine": BOOL,
    "dino.center_momentum": number(0, 1, high_open=True),
    "dino.student_temp": number(0, low_open=True),
    "dino.warmup_teacher_temp": number(0, low_open=True),
    "dino.teacher_temp": number(0, low_open=True),
    "dino.teacher_temp_warmup_fraction": number(0, 1),
    "dino.freeze_last_layer_fraction": number(0, 1),
    "dino.num_local_crops": integer(0),
    "dino.local_crop_size": integer(1),
    "dino.local_crop_scale": image_fields.CROP_SCALE,
    "dino.local_blur_prob": PROBABILITY,
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
    "mae": (SHARED, IMAGE, MAE),
    "dino": (SHARED, IMAGE, DINO),
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
    "mae": ("augment", "knn", "mae"),
    "dino": ("augment", "knn", "dino"),
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
    if config.get("weight_decay_end") is not None and config.optimizer == "lars":
        return (
            f"weight_decay_end={config.weight_decay_end} needs optimizer 'adamw' or 'sgd' (LARS "
            "takes one weight decay): set weight_decay_end=None or change the optimizer."
        )
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
