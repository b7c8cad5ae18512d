"""Workdirs on Google Cloud Storage, against a real GCS API: ``gcp-storage-emulator`` on localhost.

The emulator lives in its own venv, made by ``tests/tools/gcs_emulator_venv.sh``. The only
variable set is ``STORAGE_EMULATOR_HOST``; ``ssl_jax.core.storage`` points each client at it. The
2-process gs:// run (SIGKILL, resume, report and linear evaluation from the bucket) is one of
test_multihost's shared runs.
"""

import os

import fsspec
import pytest
from multihost_runs import BUCKET, EMULATOR_PYTHON, buckets, gcs_emulator, objects
from test_data import needs_fashion_mnist

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint, storage


@pytest.fixture(scope="module")
def gcs():
    """The emulator's URL, with STORAGE_EMULATOR_HOST set here and for every child."""
    if not os.path.exists(EMULATOR_PYTHON):
        pytest.skip("no GCS emulator: run tests/tools/gcs_emulator_venv.sh")
    with pytest.MonkeyPatch.context() as patch, gcs_emulator(patch) as url:
        yield url


@needs_fashion_mnist
def test_missing_bucket_is_one_line_error_before_anything_is_written(gcs):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.total_steps = 1
    with pytest.raises(train.ConfigError, match=r"bucket 'no-such-bucket' of --workdir=gs://"):
        train.run(config, "gs://no-such-bucket/run")
    assert buckets(gcs) == [BUCKET]  # not created on the way


def test_damaged_checkpoint_on_gcs_is_moved_aside_and_the_older_one_restores(gcs):
    import jax.numpy as jnp

    workdir = f"gs://{BUCKET}/damaged"
    saver = checkpoint.Checkpointer(workdir, async_save=False)
    for step in (1, 2):
        saver.save(step, {"w": jnp.full((4,), float(step))})
    saver.close()
    # Deleting an object of the newest step is what a partial copy or a lifecycle rule leaves.
    victim = max(
        (n for n in objects(gcs, "damaged/checkpoints/2/") if "/d/" in n),
        key=lambda n: objects(gcs, n)[n],
    )
    storage.path(f"gs://{BUCKET}/{victim}").unlink()
    reader = checkpoint.Checkpointer(workdir)
    template = checkpoint.abstract_like({"w": jnp.zeros((4,))})
    restored = reader.restore_newest_good(template)
    reader.close()
    assert float(restored["w"][0]) == 1.0
    names = objects(gcs, "damaged/checkpoints/")
    assert any(n.startswith("damaged/checkpoints/2.corrupt/") for n in names)
    assert not any(n.startswith("damaged/checkpoints/2/") for n in names)


def test_objects_another_process_writes_after_a_listing_are_seen(gcs):
    """A process that listed a workdir (a notebook, the other host) sees what is written later:
    Orbax's restore looks for a new step's ``default`` item after listing the steps."""
    checkpoints = storage.path(f"gs://{BUCKET}/watched/checkpoints")
    (checkpoints / "1").mkdir(parents=True)
    (checkpoints / "1" / "x").write_text("{}")
    assert [p.name for p in checkpoints.iterdir()] == ["1"]
    # Written by another client (its own instance, as another process's would be).
    other = fsspec.filesystem("gs", skip_instance_cache=True)
    other.pipe(f"{BUCKET}/watched/checkpoints/7/default/x", b"{}")
    assert (checkpoints / "7" / "default").exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "7"]
