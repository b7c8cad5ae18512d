"""The report's pictures from a real (tiny) pretraining workdir, in process and by the CLI."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from clu import metric_writers
from matplotlib import image as mpimg
from test_data import needs_fashion_mnist

from configs import simclr_fashion_mnist
from ssl_jax import report, train
from ssl_jax.core import events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_PLOTS = ["training_curves", "knn_accuracy", "embeddings", "augmented_views"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert 200 <= height <= 4000 and 300 <= width <= 4000, (path, pixels.shape)
    assert pixels.std() > 0.01, f"{path} is blank"


def single_device_env():
    """The environment a user's shell has: no simulated devices (the run had eight)."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    # XLA reads a lone non-flag word (even an empty one) as a file of flags: keep only flags.
    env["XLA_FLAGS"] = " ".join(
        f for f in flags if not f.startswith("--xla_force_host_platform_device_count")
    )
    return env


@pytest.fixture(scope="module")
def simclr_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("simclr_run"))
    config = simclr_fashion_mnist.get_config("runlocal")
    config.plots = True
    train.run(config, workdir)
    return workdir


def test_read_scalars_keeps_the_newest_write_of_a_step(tmp_path):
    # A run resumed from step 2's checkpoint logs steps 3 and 4 again.
    for losses in ({1: 5.0, 2: 4.0, 3: 9.0, 4: 9.0}, {3: 3.0, 4: 2.0}):
        writer = metric_writers.SummaryWriter(str(tmp_path))
        for step, loss in losses.items():
            writer.write_scalars(step, {"loss": loss})
        writer.close()
    steps, values = events.read_scalars(str(tmp_path))["loss"]
    assert steps.tolist() == [1, 2, 3, 4]
    assert values.tolist() == [5.0, 4.0, 3.0, 2.0]


def test_a_directory_that_is_not_a_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        report.write(str(tmp_path))
    with pytest.raises(ValueError, match="embedding must be one of"):
        report.write(str(tmp_path), embedding="umap")


@pytest.mark.slow
@needs_fashion_mnist
def test_a_finished_run_draws_every_plot_and_sends_them_to_tensorboard(simclr_workdir):
    paths = sorted(glob.glob(os.path.join(simclr_workdir, "plots", "*.png")))
    assert paths == sorted(os.path.join(simclr_workdir, "plots", f"{n}.png") for n in IMAGE_PLOTS)
    for path in paths:
        assert_png(path)
    tags = {}
    for path in glob.glob(os.path.join(simclr_workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("plots/"):
                    tags[value.tag] = event.step
    assert tags == {f"plots/{name}": 4 for name in IMAGE_PLOTS}  # the run's last step


@pytest.mark.slow
@needs_fashion_mnist
def test_cli_redraws_the_plots_from_the_workdir_alone(simclr_workdir, tmp_path):
    # A copy, so that nothing the training process kept in memory can help.
    workdir = str(tmp_path / "copy")
    shutil.copytree(simclr_workdir, workdir, ignore=shutil.ignore_patterns("plots"))
    result = subprocess.run(
        [sys.executable, "-m", "ssl_jax.report", f"--workdir={workdir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=single_device_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = sorted(os.listdir(os.path.join(workdir, "plots")))
    for name in drawn:
        assert_png(os.path.join(workdir, "plots", name))
    assert drawn == sorted(f"{name}.png" for name in IMAGE_PLOTS), result.stderr[-3000:]


@pytest.mark.slow
@needs_fashion_mnist
def test_missing_pieces_skip_their_plot_with_a_warning(simclr_workdir, tmp_path, caplog):
    workdir = str(tmp_path / "no_checkpoint")
    shutil.copytree(
        simclr_workdir, workdir, ignore=shutil.ignore_patterns("plots", "checkpoints", "*.json")
    )
    with open(os.path.join(simclr_workdir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    paths = report.write(workdir)
    names = [os.path.basename(path)[: -len(".png")] for path in paths]
    assert names == ["training_curves", "knn_accuracy", "augmented_views"]
    assert "skipped embeddings: no checkpoint" in caplog.text
    assert not np.any(["Traceback" in record.message for record in caplog.records])


@pytest.mark.slow
def test_mlm_run_gets_its_curves_and_the_models_guesses(tmp_path):
    """An MLM workdir laid out as the trainer leaves it (config, checkpoint, events), untrained."""
    from configs import bert_mlm_ptb
    from ssl_jax import tasks
    from ssl_jax.core import checkpoint, workdir
    from ssl_jax.evaluation import pretrained

    config = bert_mlm_ptb.get_config("runlocal")
    if tasks.of_method(config.method).problem(config):
        pytest.skip(f"{tasks.of_method(config.method).problem(config)} (.ci/run prepares it)")
    run_dir = str(tmp_path)
    assert workdir.check_and_record_config(config, run_dir) is None
    initial = pretrained.load(run_dir, random_init=True)
    saver = checkpoint.Checkpointer(run_dir, async_save=False)
    saver.save(3, {"step": np.int32(3), **initial.variables})
    saver.close()
    writer = metric_writers.SummaryWriter(run_dir)
    for step in (1, 2, 3):
        writer.write_scalars(step, {"loss": 8.0 - step, "learning_rate": 1e-3 * step})
    for step in (0, 3):
        writer.write_scalars(step, {"eval_mlm_accuracy": 0.01 * step, "eval_perplexity": 4e3})
    writer.close()
    paths = report.write(run_dir)
    names = ["training_curves", "mlm_eval", "mlm_predictions"]
    assert paths == [os.path.join(run_dir, "plots", f"{name}.png") for name in names]
    for path in paths:
        assert_png(path)
