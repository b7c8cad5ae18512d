"""Multi-process start-up, device mesh, host-local → global arrays, and the two step drivers.

Step bodies are written per device, with collectives over ``DATA_AXIS``; ``shard`` (jit +
shard_map, the default) and ``pmap`` run the same body with the same global-array interface.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# Environment variables that ``srun`` sets for every task of a job step (jax's SLURM detection
# reads the same ones); ``sbatch`` alone sets no SLURM_STEP_NODELIST, so a batch script's own
# shell stays single-process.
_SLURM_STEP_VARIABLES = (
    "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
)  # fmt: skip


class StartupError(RuntimeError):
    """Multi-process start-up failed; the message says in one line what to check."""


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
    """``"slurm"`` inside a multi-task ``srun`` step, ``"tpu"`` on a Cloud TPU VM, else None.

    Only the environment and device files are read: the accelerator backend must not start
    before ``jax.distributed.initialize``.
    """
    environ = os.environ if environ is None else environ
    if all(name in environ for name in _SLURM_STEP_VARIABLES):
        if int(environ["SLURM_NTASKS"]) > 1:
            return "slurm"
    if "TPU_WORKER_HOSTNAMES" in environ or "TPU_PROCESS_ADDRESSES" in environ:
        return "tpu"  # GKE TPU pods.
    has_tpu_device = os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    if has_tpu_device and importlib.util.find_spec("libtpu") is not None:
        return "tpu"  # Cloud TPU VMs; jax reads the workers from the metadata server.
    return None


def _check_explicit_flags(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """True when the three flags are given, False when none is; ``StartupError`` otherwise."""
    given = [value is not None for value in (coordinator_address, num_processes, process_id)]
    if not any(given):
        return False
    if not all(given):
        raise StartupError(
            "--coordinator_address, --num_processes and --process_id go together: give all "
            "three (the same address and count to every process) or none."
        )
    if not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", coordinator_address):
        raise StartupError(
            f"--coordinator_address={coordinator_address!r} must be HOST:PORT, the address of "
            "process 0, e.g. 10.0.0.2:1234."
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise StartupError(
            f"--process_id={process_id} must be in [0, --num_processes={num_processes})."
        )
    return True


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> None:
    """Joins this process to a multi-process run; a single-process run needs no arguments.

    With the three arguments, joins the run they describe; without them, joins the TPU pod or
    SLURM step this process runs in (``detect_cluster``), or does nothing. Must run before
    anything touches a device. Logs this process's index and its local and global devices.

    Raises:
      StartupError: inconsistent flags, a coordinator that did not answer or processes that did
        not all join within ``timeout_s``, or processes that disagree on ``num_processes``.
    """
    explicit = _check_explicit_flags(coordinator_address, num_processes, process_id)
    cluster = None if explicit else detect_cluster()
    if explicit or cluster:
        if explicit and process_id != 0:
            _wait_for_coordinator(coordinator_address, timeout_s)
        where = coordinator_address or f"the {cluster} coordinator"
        # jax aborts the whole process (a C++ fatal error, no Python exception) when not every
        # process registers in time, so a watchdog with a shorter deadline says why first.
        watchdog = threading.Timer(
            timeout_s,
            _exit_with_error,
            [
                f"not all {num_processes or 'expected'} processes joined {where} within "
                f"{timeout_s} s: start every process (ids 0 .. N-1) with the same "
                "--coordinator_address and --num_processes=N, or fix --num_processes."
            ],
        )
        watchdog.daemon = True
        watchdog.start()
        try:
            jax.distributed.initialize(
                coordinator_address,
                num_processes,
                process_id,
                initialization_timeout=timeout_s + 30,
                # A failed start-up must not wait the default 5 minutes at exit for peers that
                # never arrived.
                shutdown_timeout_seconds=min(timeout_s, 300),
            )
        except Exception as error:  # jax raises its runtime error type, not a public one.
            detail = (str(error).strip().splitlines() or [""])[0][:200]
            raise StartupError(
                f"could not join the multi-process run at {where}: {detail}"
            ) from None
        finally:
            watchdog.cancel()
        if explicit:
            _check_same_process_count(num_processes, process_id, timeout_s)
    logging.info(
        "process %d of %d (%s): %d local devices %s, %d global devices",
        jax.process_index(), jax.process_count(), cluster or ("flags" if explicit else "single"),
        jax.local_device_count(), [d.id for d in jax.local_devices()], jax.device_count(),
    )  # fmt: skip


def _exit_with_error(message: str) -> None:
    """Ends the process from a watchdog thread while the main thread is blocked inside jax."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def _wait_for_coordinator(coordinator_address: str, timeout_s: int) -> None:
    """Waits until process 0's coordinator accepts connections, or raises ``StartupError``."""
    host, _, port = coordinator_address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise StartupError(
                    f"no coordinator answered at {coordinator_address} within {timeout_s} s: "
                    "start process 0 (--process_id=0) on that host first, or fix "
                    "--coordinator_address."
                ) from None
            time.sleep(0.5)


def _check_same_process_count(num_processes: int, process_id: int, timeout_s: int) -> None:
    """Every process compares its ``--num_processes`` with everyone's, before any device work.

    The coordinator admits any process whose id is below its own count, so a process started
    with another count would otherwise wait minutes for a device topology that never completes.
    """
    # The distributed client is not public API; it is the key-value store all processes share.
    from jax._src import distributed

    client = distributed.global_state.client
    client.key_value_set(f"ssl_jax/num_processes/{process_id}", str(num_processes))
    for other in range(num_processes):
        try:
            value = client.blocking_key_value_get(
                f"ssl_jax/num_processes/{other}", timeout_s * 1000
            )
        except Exception:
            raise StartupError(
                f"process {other} did not report within {timeout_s} s; start every process with "
                f"the same --coordinator_address and --num_processes={num_processes}."
            ) from None
        if int(value) != num_processes:
            raise StartupError(
                f"--num_processes={num_processes} here but process {other} was started with "
                f"--num_processes={value}; give every process the same count."
            )


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``DATA_AXIS`` over ``devices`` (default: every device of every process).

    >>> make_mesh(jax.devices()[:1]).axis_names
    ('data',)
    """
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

    >>> mesh = make_mesh()
    >>> shards = to_global({"label": np.arange(2 * mesh.size)}, mesh)["label"].addressable_shards
    >>> rows = sorted(shard.data.tolist() for shard in shards)  # two rows each, in order
    >>> rows == [[i, i + 1] for i in range(0, 2 * mesh.size, 2)]
    True
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

    Replication checking stays on (``check_vma=True``, shard_map's default): values are typed
    as varying over ``DATA_AXIS`` or replicated, and JAX differentiates collectives by those
    types, summing the gradients of replicated inputs itself. A body that takes
    ``jax.grad`` of a global loss (``losses`` are all-reduced) with respect to replicated
    parameters gets the one-device gradient of the global batch, with no reduction of its own.
    """
    mapped = jax.shard_map(step_body, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    return jax.jit(mapped, donate_argnums=tuple(donate_argnums))


def pmap_replicated_grads(grads: Any, axis_name: str = DATA_AXIS) -> Any:
    """The global gradient of replicated parameters under ``jax.pmap``: the mean over devices.

    pmap has no replication types, and its ``psum`` transposes to ``psum``: each device's
    gradient of a loss whose value is the same on every device (an all-reduced global mean) is
    ``axis_size`` times its own contribution to the global gradient, so the mean over devices
    is that gradient. The shard_map driver needs nothing of the kind (see ``shard``).
    """
    return jax.lax.pmean(grads, axis_name)


def pmap(
    step_body: Callable[..., Any], mesh: Mesh, *, donate_argnums: Sequence[int] = ()
) -> Callable[..., Any]:
    """``jax.pmap(step_body)`` behind ``shard``'s interface, for ``(state, batch)`` bodies.

    Takes and returns what the shard_map driver does: state and metrics replicated on ``mesh``,
    the batch split over it on the leading axis. Converting costs no copy of the data: the
    batch is regrouped as [devices, per-device batch] by a jitted reshape along the existing
    split, and in a multi-process run arrays are rewrapped between global and process-local
    views of the same device buffers (except that ``jax.pmap`` copies donated inputs then).
    The body runs with ``in_axes=(None, 0)`` and ``out_axes=None`` over the mesh's devices, so
    its collectives span the same devices, in the same order, as under ``shard``.
    """
    devices = tuple(mesh.devices.flat)
    multiprocess = jax.process_count() > 1
    mapped = jax.pmap(
        step_body,
        axis_name=DATA_AXIS,
        in_axes=(None, 0),
        out_axes=None,
        devices=devices,
        donate_argnums=tuple(donate_argnums),
    )
    per_device_batch = NamedSharding(mesh, P(DATA_AXIS))
    group = jax.jit(
        lambda batch: jax.tree.map(lambda x: x.reshape(len(devices), -1, *x.shape[1:]), batch),
        out_shardings=per_device_batch,
    )

    def step(state: Any, batch: Any) -> Any:
        batch = group(batch)
        if not multiprocess:
            return mapped(state, batch)
        # Multi-process pmap takes and returns process-local arrays.
        state = multihost_utils.global_array_to_host_local_array(state, mesh, P())
        batch = multihost_utils.global_array_to_host_local_array(batch, mesh, P(DATA_AXIS))
        outputs = mapped(state, batch)
        return multihost_utils.host_local_array_to_global_array(outputs, mesh, P())

    return step
