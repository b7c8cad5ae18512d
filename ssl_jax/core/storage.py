"""Workdirs on local disk or on object stores (``gs://``) behind one path type, ``etils.epath``.

Importing this module points every storage client the project uses at ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
import threading
from typing import Any

# TF's own GCS client has no endpoint override, so gs:// paths go through fsspec/gcsfs, which
# honours STORAGE_EMULATOR_HOST like Google's clients do. etils reads this at each call.
os.environ.setdefault("EPATH_USE_TF", "false")


def point_clients_at_emulator() -> None:
    """Derives each client's own setting from the one variable a user sets."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return
    url = host if "://" in host else f"http://{host}"
    # tensorstore (Orbax's arrays) has its own variable, and needs a token when there are no
    # credentials; an emulator accepts any.
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    # gcsfs asks the storage-control API about each bucket's layout; emulators lack that API.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


point_clients_at_emulator()

import fsspec  # noqa: E402

# Workdirs are written by other processes (the other hosts, a run a notebook watches): a listing
# cached by gcsfs would hide their new checkpoints from this one, e.g. a step's "default" item
# from Orbax's restore. Workdir listings are few; arrays go through tensorstore.
for _protocol in ("gs", "gcs"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)

from etils import epath  # noqa: E402 - after the variables it reads

Path = epath.Path


class StorageError(OSError):
    """A workdir that cannot be read or written; the message names the path and what to do."""


def is_remote(path: Any) -> bool:
    return "://" in os.fspath(path)


def path(location: Any, *parts: str) -> epath.Path:
    """``location`` (joined with ``parts``) as an epath; local paths stay as given, relative too."""
    return epath.Path(location, *parts)


def absolute(location: Any) -> str:
    """An absolute form of ``location`` (object-store URLs are already absolute)."""
    location = os.fspath(location)
    return location if is_remote(location) else os.path.abspath(location)


def _filesystem(location: str):
    return fsspec.filesystem(location.split("://", 1)[0])


def _bucket(location: str) -> str:
    return location.split("://", 1)[1].split("/", 1)[0]


def check_writable(workdir: str) -> None:
    """Raises ``StorageError`` when the bucket of a remote ``workdir`` is absent or forbidden.

    Checked before anything compiles, so a typo in a bucket name costs seconds. Local workdirs
    are created as needed and are not checked here.
    """
    if not is_remote(workdir):
        return
    bucket = _bucket(workdir)
    try:
        exists = _filesystem(workdir).exists(bucket)
    except Exception as error:  # noqa: BLE001 - any failure means no access
        raise StorageError(
            f"cannot reach bucket {bucket!r} of --workdir={workdir} ({type(error).__name__}: "
            f"{_one_line(error)}); check the credentials and the bucket's permissions."
        ) from None
    if not exists:
        raise StorageError(
            f"bucket {bucket!r} of --workdir={workdir} does not exist or is not visible to these "
            "credentials; create it or fix the name."
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def makedirs(directory: Any) -> None:
    """Creates a local directory; object stores have none (and gcsfs would create a bucket)."""
    if not is_remote(directory):
        os.makedirs(directory, exist_ok=True)


def write_atomically(target: Any, data: bytes | str) -> None:
    """Readers see the old content or the new, never half of it.

    Locally through a temporary file renamed over ``target``; an object-store upload becomes
    visible only once complete, so it is written directly.
    """
    data = data.encode() if isinstance(data, str) else data
    target = os.fspath(target)
    if is_remote(target):
        epath.Path(target).write_bytes(data)
        return
    makedirs(os.path.dirname(target) or ".")
    temporary = f"{target}.tmp{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, target)


def move_tree(source: Any, target: Any) -> None:
    """Moves a directory: a rename locally, copy-then-delete of its objects on object stores."""
    source, target = os.fspath(source), os.fspath(target)
    if not is_remote(source):
        os.rename(source, target)
        return
    filesystem = _filesystem(source)
    # Server-side copies; gcsfs's move API is not universally available (emulators, old buckets).
    filesystem.copy(source, target, recursive=True)
    filesystem.rm(source, recursive=True)
    filesystem.invalidate_cache()


def download(files: list[Any], directory: str) -> list[str]:
    """Local copies of ``files`` in ``directory`` (for readers that only take local paths)."""
    copies = []
    for index, remote in enumerate(files):
        remote = epath.Path(remote)
        local = os.path.join(directory, f"{index:04d}_{remote.name}")
        with open(local, "wb") as f:
            f.write(remote.read_bytes())
        copies.append(local)
    return copies


class Mirror:
    """A local directory whose files are copied to ``target`` in the background on ``sync()``.

    For writers that only know local files (TensorFlow's event writer, log files): they write
    into ``local`` (a fresh directory outside the current one), and each ``sync`` uploads the
    files that changed. A local ``target`` is used directly and ``sync`` does nothing.
    """

    def __init__(self, target: Any):
        self.target = os.fspath(target)
        self.remote = is_remote(self.target)
        if self.remote:
            self.local = tempfile.mkdtemp(prefix="ssl_jax_mirror_")
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "storage-mirror")
        else:
            self.local = self.target
            os.makedirs(self.local, exist_ok=True)
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._pending: concurrent.futures.Future | None = None
        self._lock = threading.Lock()

    def _upload_changed(self) -> None:
        for folder, _, names in os.walk(self.local):
            for name in sorted(names):
                local = os.path.join(folder, name)
                relative = os.path.relpath(local, self.local)
                stat = os.stat(local)
                version = (stat.st_size, stat.st_mtime_ns)
                if self._uploaded.get(relative) == version:
                    continue
                with open(local, "rb") as f:
                    data = f.read()
                # The whole file each time: event and log files are small and only appended to.
                epath.Path(self.target, relative).write_bytes(data)
                self._uploaded[relative] = version

    def sync(self) -> None:
        """Starts uploading what changed; a sync still running absorbs this one."""
        if not self.remote:
            return
        with self._lock:
            if self._pending is not None and not self._pending.done():
                return
            self._pending = self._executor.submit(self._upload_changed)

    def close(self) -> None:
        """Uploads everything now and waits; then removes the local copy."""
        if not self.remote:
            return
        with self._lock:
            if self._pending is not None:
                self._pending.exception()  # a failed background upload is retried below
            self._executor.submit(self._upload_changed).result()
            self._executor.shutdown()
        shutil.rmtree(self.local, ignore_errors=True)


class MirroredWriter:
    """A clu metric writer writing into a ``Mirror``; each ``flush`` starts an upload."""

    def __init__(self, writer, mirror: Mirror):
        self._writer, self.mirror = writer, mirror

    def __getattr__(self, name: str):
        return getattr(self._writer, name)

    def flush(self) -> None:
        self._writer.flush()
        self.mirror.sync()

    def close(self) -> None:
        self._writer.close()
        self.mirror.close()


def create_writer(logdir: Any, *, just_logging: bool):
    """clu's default writer for ``logdir``; on an object store, through a ``Mirror``."""
    from clu import metric_writers  # noqa: PLC0415 - clu imports TensorFlow

    logdir = os.fspath(logdir)
    if just_logging or not is_remote(logdir):
        return metric_writers.create_default_writer(
            logdir, just_logging=just_logging, asynchronous=False
        )
    mirror = Mirror(logdir)
    writer = metric_writers.create_default_writer(mirror.local, asynchronous=False)
    return MirroredWriter(writer, mirror)
