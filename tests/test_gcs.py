"""Workdirs on Google Cloud Storage, against a real GCS API: ``gcp-storage-emulator`` on localhost.

The emulator lives in its own venv, made by ``tests/tools/gcs_emulator_venv.sh``. The only
variable set is ``STORAGE_EMULATOR_HOST``; ``ssl_jax.core.storage`` points each client at it.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from entry_points import run_commands
from multihost_runs import (
    CHECKPOINT_EVERY,
    final_arrays,
    kill,
    start,
    uninterrupted,
    wait,
    wait_for,
    write_hook,
)
from resume import assert_bitwise_equal
from test_data import needs_fashion_mnist
from test_multihost import REPO, free_port

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint, storage

EMULATOR_PYTHON = os.path.join(REPO, ".test-tools", "gcs-emulator", "bin", "python")
LAUNCHER = os.path.join(REPO, "tests", "tools", "gcs_emulator.py")
BUCKET = "ssl-jax-test"


def objects(url, prefix):
    """{name: size} of the bucket's objects under ``prefix``, as the GCS JSON API lists them."""
    found, token = {}, ""
    while True:
        query = f"{url}/storage/v1/b/{BUCKET}/o?prefix={prefix}" + (
            f"&pageToken={token}" if token else ""
        )
        with urllib.request.urlopen(query) as answer:
            page = json.load(answer)
        found.update({item["name"]: int(item["size"]) for item in page.get("items", [])})
        token = page.get("nextPageToken")
        if not token:
            return found


def buckets(url):
    with urllib.request.urlopen(f"{url}/storage/v1/b") as answer:
        return sorted(item["name"] for item in json.load(answer).get("items", []))


@pytest.fixture(scope="module")
def gcs():
    """The emulator's URL, with STORAGE_EMULATOR_HOST set here and for every child."""
    if not os.path.exists(EMULATOR_PYTHON):
        pytest.skip("no GCS emulator: run tests/tools/gcs_emulator_venv.sh")
    port = free_port()
    url = f"http://localhost:{port}"
    server = subprocess.Popen(
        [EMULATOR_PYTHON, LAUNCHER, "start", f"--port={port}", "--in-memory",
         f"--default-bucket={BUCKET}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                buckets(url)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, "emulator down"
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", url)
            for name in (
                "TENSORSTORE_GCS_HTTP_URL",
                "GOOGLE_AUTH_TOKEN_FOR_TESTING",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
            ):
                patch.delenv(name, raising=False)
            storage.point_clients_at_emulator()
            yield url
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
@needs_fashion_mnist
def test_two_process_gs_run_killed_and_resumed_equals_local_run(gcs, tmp_path, tmp_path_factory):
    want = uninterrupted(tmp_path_factory)
    workdir = f"gs://{BUCKET}/killed"
    cwd, marks = tmp_path / "cwd", tmp_path / "marks"
    cwd.mkdir()
    marks.mkdir()
    hook = write_hook(str(tmp_path / "hook"))
    started = time.perf_counter()
    first = start(
        workdir, cwd=cwd, logs=tmp_path / "logs1",
        env_extra={"PYTHONPATH": hook, "SSL_JAX_TEST_STALL_AFTER_SAVE": str(CHECKPOINT_EVERY),
                   "SSL_JAX_TEST_MARKS": str(marks)},
    )  # fmt: skip
    wait_for(lambda: len(os.listdir(marks)) == 2, first, what="the first checkpoint")
    step_objects = objects(gcs, f"killed/checkpoints/{CHECKPOINT_EVERY}/")
    kill(first)
    assert f"killed/checkpoints/{CHECKPOINT_EVERY}/commit_success.txt" in step_objects
    resumed = wait(start(workdir, cwd=cwd, logs=tmp_path / "logs2"))
    seconds = time.perf_counter() - started
    for process, (returncode, output) in enumerate(resumed):
        assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        assert f"at step {CHECKPOINT_EVERY}" in output and "resumed from" in output
    assert_bitwise_equal(final_arrays(workdir), want)

    names = objects(gcs, "killed/")
    assert "killed/config.json" in names
    assert {"killed/logs/process_0.log", "killed/logs/process_1.log"} <= set(names)
    assert any(n.startswith("killed/events.out.tfevents.") for n in names), sorted(names)
    assert {n.split("/")[2] for n in names if n.startswith("killed/checkpoints/")} >= {"4", "10"}
    assert os.listdir(cwd) == []  # nothing landed in the current directory (no "gs:" folder)
    print(
        f"gs:// 2-process kill+resume: {seconds:.0f} s wall; checkpoint of step "
        f"{CHECKPOINT_EVERY}: {len(step_objects)} objects, {sum(step_objects.values())} bytes"
    )

    started = time.perf_counter()
    # One interpreter forks both commands (shared imports); they run from the repository root.
    report, linear_eval = run_commands(
        [
            ["ssl_jax.report", f"--workdir={workdir}"],
            ["ssl_jax.linear_eval", f"--workdir={workdir}",
             "--config=configs/linear_eval.py:runlocal",
             "--config.compare_random_init=False", "--config.compare_pixels=False",
             "--config.epochs=1"],
        ],
        command_timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert linear_eval.returncode == 0, linear_eval.stderr[-3000:]
    assert "training_curves.png" in report.stdout
    assert objects(gcs, "killed/plots/training_curves.png")
    results = json.loads(storage.path(workdir, "linear_eval", "results.json").read_text())
    assert results["step"] == 10 and 0 <= results["linear_top1"] <= 1
    assert any(n.startswith("killed/linear_eval/features_step10") for n in objects(gcs, "killed/"))
    assert not os.path.exists(os.path.join(REPO, "gs:"))
    assert os.listdir(cwd) == []
    print(f"report + linear_eval from gs://: {time.perf_counter() - started:.0f} s wall")


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
