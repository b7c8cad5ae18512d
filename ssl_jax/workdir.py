"""The config a workdir was started with, kept beside its checkpoints in ``config.json``.

Resuming with a different config would silently mix two experiments; only the fields in
``RESUMABLE_FIELDS`` may change between restarts.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

# Fields that say how long to run or how often to report, not what is trained.
RESUMABLE_FIELDS = (
    "total_steps",
    "epochs",
    "log_every_steps",
    "checkpoint_every_steps",
    "eval_every_steps",
    "keep_checkpoints",
    "profile_steps",
    "plots",
    "skip_nonfinite_steps",
    "data_dir",
    "overwrite",
    "knn.",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted names of fields that differ, ignoring ``RESUMABLE_FIELDS``."""
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    names = sorted(set(saved_flat) | set(current_flat))
    return [
        name
        for name in names
        if saved_flat.get(name) != current_flat.get(name)
        and not any(name == field or name.startswith(field) for field in RESUMABLE_FIELDS)
    ]


def check_and_record_config(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """None if ``config`` may run in ``workdir`` (recording it there first); else the reason."""
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json_best_effort())
    if os.path.exists(path) and not config.get("overwrite", False):
        with open(path) as f:
            saved = json.load(f)
        changed = config_differences(saved, current)
        if changed:
            shown = ", ".join(
                f"{name}: {_flatten(saved).get(name)!r} -> {_flatten(current).get(name)!r}"
                for name in changed[:4]
            )
            return (
                f"{workdir} holds a run with another config ({shown}); use a new --workdir or "
                "pass --config.overwrite=True to continue it with this config."
            )
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    return None
