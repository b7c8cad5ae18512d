"""Orbax checkpoints of the whole ``TrainState`` in ``WORKDIR/checkpoints``: keep-N, async, resume.

Orbax writes each step to a temporary folder and renames it when complete (on object stores: marks
it complete last), so an interrupted save never replaces a good checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from ssl_jax.core import storage


def _write_replicated_arrays_once_on_cpu() -> None:
    """Turns off Orbax's replica-parallel writes when the devices are CPU cores.

    Replica-parallel saving splits each replicated array over its replicas, which compiles one
    slicing program per array shape and device: 150 programs (7 s) at the first save of a small
    ResNet on 8 CPU devices, for no gain when every replica lives in the same host memory.
    Accelerators keep Orbax's default.
    """
    if jax.default_backend() != "cpu":
        return
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_use_replica_parallel", False):
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                use_replica_parallel=False,
                array_metadata_store=getattr(current, "_array_metadata_store", None),
            ),
            override=True,
        )


class Checkpointer:
    """Saves and restores a state pytree under ``workdir/checkpoints/<step>``."""

    def __init__(
        self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, create: bool = True
    ):
        _write_replicated_arrays_once_on_cpu()
        self.workdir = storage.absolute(workdir)
        self.directory = str(storage.path(self.workdir) / "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=create,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """The state at ``step`` (default: newest), laid out as ``abstract_state`` says.

        Args:
          abstract_state: pytree of ``jax.ShapeDtypeStruct`` with shardings, e.g. from
            ``jax.eval_shape`` of the init function.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_newest_good(self, abstract_state: Any) -> Any | None:
        """The newest checkpoint that restores, or None when there is none.

        A checkpoint that fails to restore because it is damaged (truncated or missing files, as
        a crash or a full disk leaves them) is moved to ``<step>.corrupt`` with a warning, never
        deleted, and the next older one is tried; the move also keeps the bad step from blocking
        a new save. A failure to reach the storage (permission, credentials, timeout) raises
        ``storage.StorageError`` and sets nothing aside.
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self.restore(abstract_state, step)
            except Exception as error:  # noqa: BLE001 - sorted out by _raise_unless_damaged
                self._raise_unless_damaged(step, error)
                self._set_aside(step, error)
        return None

    def _raise_unless_damaged(self, step: int, error: Exception) -> None:
        """Raises ``StorageError`` unless ``error`` says the step's files are damaged."""
        problem = _access_problem(error)
        if problem is None:
            # Reading a small file of the same step tells a damaged step from unreachable storage.
            try:
                for name in ("_CHECKPOINT_METADATA", "default/_METADATA"):
                    candidate = storage.path(self.directory) / str(step) / name
                    if candidate.exists():
                        candidate.read_bytes()
            except FileNotFoundError:
                pass
            except Exception as probe_error:  # noqa: BLE001 - any other failure is access
                problem = probe_error
        if problem is not None:
            raise storage.StorageError(
                f"cannot read checkpoint step {step} in {self.directory} "
                f"({type(problem).__name__}: {' '.join(str(problem).split())[:200]}); "
                "check credentials, permissions and the network, then rerun."
            ) from error

    def _set_aside(self, step: int, error: Exception) -> None:
        path = storage.path(self.directory) / str(step)
        target = path.parent / f"{step}.corrupt"
        suffix = 1
        while target.exists():
            target, suffix = path.parent / f"{step}.corrupt{suffix}", suffix + 1
        if jax.process_index() == 0:
            storage.move_tree(path, target)
        if jax.process_count() > 1:
            # Every process lists the steps again only once the move is done.
            multihost_utils.sync_global_devices(f"checkpoint set aside {step}")
        logging.warning(
            "checkpoint step %d in %s cannot be restored (%s: %s); moved it to %s and "
            "falling back to the previous one",
            step, self.directory, type(error).__name__, str(error)[:200], target,
        )  # fmt: skip
        self._manager.reload()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_arrays(self, step: int | None = None) -> Any:
        """The saved tree as nested dicts of arrays, without a template (for inspection).

        The arrays land on this process's first device, whatever device count saved them.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        path = storage.path(self.directory) / str(step) / "default"
        metadata = ocp.StandardCheckpointer().metadata(path).item_metadata
        metadata = getattr(metadata, "tree", metadata)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata
        )
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def save(self, step: int, state: Any) -> None:
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


# Words of gRPC/HTTP statuses (tensorstore puts them in its messages) that mean the storage could
# not be reached or refused access: the files may be intact.
_ACCESS_WORDS = (
    "PERMISSION_DENIED", "UNAUTHENTICATED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "Forbidden",
    "Unauthorized", "credentials", "HTTP response code: 401", "HTTP response code: 403",
)  # fmt: skip


def _access_problem(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain that says the storage was unreachable, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PermissionError | TimeoutError | ConnectionError):
            return error
        if any(word in str(error) for word in _ACCESS_WORDS):
            return error
        error = error.__cause__ or error.__context__
    return None


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) of a tree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
