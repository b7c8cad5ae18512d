"""An exported encoder folder: flat safetensors weights beside a JSON model description.

Written atomically by ``write`` (``python -m ssl_jax.export``), read back by ``load_encoder`` with
no workdir, dataset or optimiser state.

Layout of ``DIR``:
  ``encoder.safetensors``: one tensor per leaf, keyed ``COLLECTION/MODULE/.../LEAF`` with
    COLLECTION ``params`` or ``batch_stats`` and the Flax module path below it, e.g.
    ``params/stage_0_block_0/conv_0/kernel`` or ``batch_stats/stem_bn/mean``; float32 as trained.
  ``encoder.json``: ``format``, ``kind`` (``image`` or ``bert``), ``model`` (the config's model
    block: name, width_multiplier, stem, patch_size...), ``dtype`` (compute dtype), ``input``
    (image_size and channels, or the BERT sizes under ``bert``), ``feature_dim``, ``source``
    (workdir, step, method, dataset) and ``weights`` (file, count, bytes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

FORMAT = "ssl_jax.encoder/1"
WEIGHTS_FILE = "encoder.safetensors"
METADATA_FILE = "encoder.json"
SEPARATOR = "/"
# Image inputs arrive as uint8 pixels; every image method's encode divides by this first.
PIXEL_SCALE = 255.0


class ShapeMismatchError(ValueError):
    """Weights that do not fit the architecture; the message names the first parameter."""


def flatten(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"params": tree, "batch_stats": tree}`` as ``{"params/a/b": array}`` (host arrays)."""
    flat = traverse_util.flatten_dict(jax.device_get(dict(variables)), sep=SEPARATOR)
    return {key: np.ascontiguousarray(value) for key, value in flat.items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten``; a collection absent from ``flat`` comes back as ``{}``."""
    tree = traverse_util.unflatten_dict(dict(flat), sep=SEPARATOR)
    return {"params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {}), **{
        key: value for key, value in tree.items() if key not in ("params", "batch_stats")
    }}  # fmt: skip


def check_shapes(expected: Mapping[str, Any], found: Mapping[str, Any], source: str) -> None:
    """Raises ``ShapeMismatchError`` at the first of ``expected``'s keys ``found`` lacks or
    shapes otherwise, or at the first extra key of ``found``.

    Args:
      expected: flat key -> array or ShapeDtypeStruct, in the model's own order.
      found: flat key -> array, as read from a file.
      source: what ``found`` came from, named in the message.
    """
    for key, leaf in expected.items():
        if key not in found:
            raise ShapeMismatchError(
                f"{source}: parameter {key} (shape {tuple(leaf.shape)}) is missing: the file "
                "holds another architecture; export the encoder you mean to load."
            )
        if tuple(found[key].shape) != tuple(leaf.shape):
            raise ShapeMismatchError(
                f"{source}: parameter {key} has shape {tuple(found[key].shape)} but the model "
                f"expects {tuple(leaf.shape)}: another architecture or size; check model.name, "
                "width_multiplier, stem and patch_size (or the BERT sizes)."
            )
    extra = [key for key in found if key not in expected]
    if extra:
        raise ShapeMismatchError(
            f"{source}: parameter {extra[0]} (shape {tuple(found[extra[0]].shape)}) is not in the "
            f"model ({len(extra)} such): another architecture; export the encoder you mean to load."
        )


def write(
    out: str,
    variables: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Writes ``variables`` and ``metadata`` to the folder ``out``, all or nothing.

    Both files are written into a hidden sibling folder renamed to ``out`` at the end, so a
    failure (full disk, interruption) leaves no partial export, and an ``out`` being overwritten
    stays whole until the new one is complete.

    ``extra_files`` maps a name in ``out`` to a file copied there (a BERT run's vocab.txt).

    Returns:
      The metadata written, with ``format`` and ``weights`` filled in.

    Raises:
      FileExistsError: ``out`` exists and ``overwrite`` is False (checked before writing).
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"--out={out} exists: choose a new folder or pass --overwrite.")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    flat = flatten(variables)
    metadata = dict(metadata, format=FORMAT)
    metadata["weights"] = {
        "file": WEIGHTS_FILE,
        "key_format": "COLLECTION/MODULE/.../LEAF",
        "count": int(sum(value.size for key, value in flat.items() if key.startswith("params/"))),
        "bytes": int(sum(value.nbytes for value in flat.values())),
    }
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp's 0o700 would hide the export from other users
    try:
        safetensors_numpy.save_file(
            flat, os.path.join(staging, WEIGHTS_FILE), metadata={"format": FORMAT}
        )
        os.chmod(os.path.join(staging, WEIGHTS_FILE), 0o644)  # safetensors writes 0o600
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, os.path.join(staging, name))
        if os.path.exists(out):
            retired = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(retired, "export"))
            os.rename(staging, out)
            shutil.rmtree(retired)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata


def read_metadata(directory: str) -> dict[str, Any]:
    """``encoder.json`` of an export folder; FileNotFoundError naming what to pass otherwise."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory} holds no {METADATA_FILE}: pass a folder written by "
            "`python -m ssl_jax.export --workdir=W --out=DIR`."
        )
    with open(path) as f:
        metadata = json.load(f)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: format {metadata.get('format')!r}, this reader knows {FORMAT}.")
    return metadata


@dataclasses.dataclass(frozen=True)
class Encoder:
    """An encoder rebuilt from an export folder.

    Attributes:
      module: the Flax module (``ResNet``/``ViT``, or ``Bert`` for text).
      variables: ``{"params", "batch_stats"}`` host arrays.
      metadata: the folder's ``encoder.json``.
    """

    module: nn.Module
    variables: dict[str, Any]
    metadata: dict[str, Any]

    def apply(
        self,
        variables: Any,
        inputs: jax.Array,
        *,
        train: bool = False,
        rngs: Any = None,
        mutable: Any = False,
    ) -> Any:
        """Features [B, F] of uint8 images [B, H, W, C] (or token ids [B, L], mean-pooled).

        With ``mutable`` (e.g. ``["batch_stats"]`` when training) returns ``(features, updates)``.
        """
        if self.metadata["kind"] == "bert":
            from ssl_jax.models.bert import Bert

            output = self.module.apply(
                variables, jnp.asarray(inputs, jnp.int32), train=train, rngs=rngs,
                mutable=mutable, method=Bert.encode,
            )  # fmt: skip
            (hidden, intermediates), updates = output if mutable else (output, None)
            # As methods.mlm's encode: the mean over non-padding tokens.
            valid = intermediates["valid"][..., None].astype(jnp.float32)
            features = jnp.sum(hidden.astype(jnp.float32) * valid, 1) / jnp.maximum(
                valid.sum(1), 1.0
            )
        else:
            images = jnp.asarray(inputs, jnp.float32) / PIXEL_SCALE
            output = self.module.apply(variables, images, train=train, rngs=rngs, mutable=mutable)
            (features, _), updates = output if mutable else (output, None)
        return (features, updates) if mutable else features

    @functools.cached_property
    def _jitted_apply(self) -> Any:
        return jax.jit(self.apply)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Evaluation-mode features of ``inputs`` with the exported weights (jitted)."""
        return self._jitted_apply(self.variables, inputs)


def build_module(metadata: Mapping[str, Any], bn_axis_name: str | None = None) -> nn.Module:
    """The untrained module an export's metadata describes."""
    dtype = jnp.dtype(metadata.get("dtype", "float32"))
    if metadata["kind"] == "bert":
        from ssl_jax.models.bert import Bert

        return Bert(**metadata["bert"], dtype=dtype)
    from ssl_jax.models import build_encoder

    return build_encoder(ml_collections.ConfigDict(metadata["model"]), bn_axis_name, dtype)


def variable_shapes(module: nn.Module, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Flat key -> ShapeDtypeStruct of ``module``'s variables (traced, not compiled)."""
    # Shapes only, and the key made inside the trace: no eager op, so nothing compiles.
    if metadata["kind"] == "bert":
        sample = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, x, x), sample)
    else:
        size, channels = metadata["input"]["image_size"], metadata["input"]["channels"]
        sample = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
        shapes = jax.eval_shape(
            lambda x: module.init(jax.random.PRNGKey(0), x, train=False), sample
        )
    # Parameters first: the first mismatch a user reads about is a weight, not a statistic.
    ordered = {"params": shapes["params"], **{k: v for k, v in shapes.items() if k != "params"}}
    return traverse_util.flatten_dict(ordered, sep=SEPARATOR)


def load_encoder(directory: str, *, dtype: Any = None) -> Encoder:
    """The encoder exported to ``directory``: module, weights and metadata.

    The weights are checked against the architecture the metadata names before anything is
    compiled; ``dtype`` overrides the compute dtype (e.g. ``"float32"`` for exact comparisons).

    Raises:
      FileNotFoundError: not an export folder.
      ShapeMismatchError: the weights do not fit the described model (first parameter named).
    """
    metadata = read_metadata(directory)
    if dtype is not None:
        metadata = dict(metadata, dtype=jnp.dtype(dtype).name)
    module = build_module(metadata)
    flat = safetensors_numpy.load_file(os.path.join(directory, metadata["weights"]["file"]))
    expected = variable_shapes(module, metadata)
    check_shapes(expected, flat, os.path.join(directory, metadata["weights"]["file"]))
    ordered = {key: flat[key] for key in expected}
    return Encoder(module, unflatten(ordered), metadata)
