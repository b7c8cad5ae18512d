"""The config a workdir was started with, kept beside its checkpoints in ``config.json``.

Resuming with a different config would silently mix two experiments; only the fields in
``RESUMABLE_FIELDS`` may change between restarts.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from ssl_jax.core import storage

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
    """Dotted names of fields that differ, ignoring ``RESUMABLE_FIELDS``.

    A field only the saved config holds is not read by the current one (a config holds every
    field its method and modality read), so it is no difference: workdirs recorded when every
    config carried every method's fields resume.

    >>> config_differences({"seed": 0, "moco": {"queue_size": 8}}, {"seed": 0})
    []
    >>> config_differences({"seed": 0}, {"seed": 1, "temperature": 0.2})
    ['seed', 'temperature']
    """
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    names = sorted(current_flat)
    return [
        name
        for name in names
        if saved_flat.get(name) != current_flat.get(name)
        and not any(name == field or name.startswith(field) for field in RESUMABLE_FIELDS)
    ]


def check_and_record_config(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """None if ``config`` may run in ``workdir`` (recording it there first); else the reason.

    Also the reason when ``workdir`` cannot be read or written (a bucket that does not exist, no
    permission): all before anything compiles.
    """
    try:
        return _check_and_record(config, workdir)
    except OSError as error:
        message = (
            error
            if isinstance(error, storage.StorageError)
            else storage.StorageError(
                f"cannot use --workdir={workdir} ({type(error).__name__}: "
                f"{' '.join(str(error).split())[:200]}); check the path and its permissions."
            )
        )
        return str(message)


def _check_and_record(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    storage.check_writable(workdir)
    path = storage.path(workdir) / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists() and not config.get("overwrite", False):
        saved = json.loads(path.read_text())
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
        storage.write_atomically(path, json.dumps(current, indent=2, sort_keys=True))
    return None
