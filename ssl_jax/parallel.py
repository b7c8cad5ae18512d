"""Device mesh, host-local → global arrays, and the driver that runs a per-device step on a mesh.

Step bodies are written per device, with collectives over ``DATA_AXIS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``DATA_AXIS`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def to_global(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles each process's leading-axis slice of a batch into global arrays split over devices.

    Args:
      local_batch: pytree of host arrays [local_batch, ...]; process p holds rows
        [p * local_batch, (p + 1) * local_batch) of the global batch.
      mesh: the mesh; the global batch is ``local_batch * process_count``.
    """
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def shard(
    step_body: Callable[..., Any],
    mesh: Mesh,
    *,
    in_specs: Any,
    out_specs: Any,
    donate_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
    """``jax.jit(jax.shard_map(step_body))``: the per-device body on every device of ``mesh``.

    Replication checking is off so the body sees the same collective semantics as under pmap
    (gradients of replicated inputs are per-device and summed explicitly by the body); the
    tests hold both drivers to the one-device numbers.
    """
    mapped = jax.shard_map(
        step_body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped, donate_argnums=tuple(donate_argnums))
