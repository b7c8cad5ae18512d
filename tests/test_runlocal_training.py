"""Each config that no other test trains: its ``:runlocal`` variant trains steps inside the
trainer (``train.run``), data pipeline, checkpoint and all.

Model, method, optimiser and augmentation fields stay as the config sets them; only the data is
swapped (a 2-class folder of colour JPEGs for the image configs, Penn Treebank for the Wikipedia
BERTs) and the compute dtype is float32 (XLA:CPU has no fast bfloat16 convolutions;
``test_runlocal_configs`` traces every config at its own dtype).
"""

import importlib

import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import bert_mlm_ptb
from ssl_jax import train
from ssl_jax.core import checkpoint
from ssl_jax.text import task as text_task

IMAGE_CONFIGS = [
    "simclr_cifar10",  # ResNet, CIFAR stem
    "simclr_imagenet",  # ResNet, ImageNet stem, host crops
    "moco_v2_imagenet",  # queue, shuffled BN
    "moco_v3_resnet50_imagenet",  # predictor, symmetric loss, momentum schedule
    "moco_v3_vit_small_imagenet",  # ViT with a frozen patch embedding
    "byol_imagenet",
    "simsiam_imagenet",
    "barlow_twins_imagenet",
    "vicreg_imagenet",
    "dino_vit_small_imagenet",  # multi-crop from host crops, teacher and center
    "mae_vit_base_imagenet",  # one view, masked patches
]


@pytest.fixture(autouse=True)
def no_knn_monitor(monkeypatch):
    """The kNN monitor's programs would double each run's compile time; its own tests hold it."""
    from ssl_jax.vision import monitor

    monkeypatch.setattr(monitor.KnnMonitor, "baselines", lambda self: {})
    monkeypatch.setattr(monitor.KnnMonitor, "__call__", lambda self, method, state: {})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``folder:`` dataset of 24 train and 8 test 72 x 72 colour JPEGs in two classes."""
    root = tmp_path_factory.mktemp("runlocal_images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for index in range(count):
            label = "ab"[index % 2]
            (root / split / label).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
            (root / split / label / f"{index}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return f"folder:{root}"


def train_steps(config, workdir, steps):
    """Runs the trainer for ``steps``; returns its results and the last saved state's arrays."""
    config.total_steps = steps
    config.batch_size = 8  # one example per device
    config.checkpoint_every_steps = 1
    config.shuffle_buffer = 16
    results = train.run(config, str(workdir))
    saver = checkpoint.Checkpointer(str(workdir), create=False)
    assert saver.latest_step() == steps
    return results, saver.restore_arrays(steps)


def assert_trained(results, saved, initial):
    assert np.isfinite(results["loss"]), results
    # The optimiser state holds the step's gradient (momentum or Adam's moments): a step that
    # backpropagated nothing leaves it all zero.
    moments = [np.abs(leaf).max() for leaf in jax.tree.leaves(saved["opt_state"])]
    assert max(moments) > 0, "no gradient reached the optimiser"
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), saved["params"], initial["params"])
    assert max(jax.tree.leaves(moved)) > 0, "the parameters never changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_CONFIGS)
def test_image_config_runlocal_trains_in_the_trainer(name, folder, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config("runlocal")
    config.dataset = folder
    config.dtype = "float32"
    # Two steps: the first can be warm-up at learning rate 0, the second cannot.
    results, saved = train_steps(config, tmp_path, steps=2)
    initial = checkpoint.Checkpointer(str(tmp_path), create=False).restore_arrays(1)
    assert_trained(results, saved, initial)


@pytest.mark.slow
def test_wikipedia_bert_configs_runlocal_train_in_the_trainer(tmp_path):
    from configs import bert_base_wikipedia, bert_large_wikipedia

    config = bert_base_wikipedia.get_config("runlocal")
    # Under runlocal both are the same tiny BERT (the large model is only the full run's).
    assert bert_large_wikipedia.get_config("runlocal").to_dict() == config.to_dict()
    ptb = bert_mlm_ptb.get_config("runlocal")
    config.dataset, config.text = ptb.dataset, ptb.text
    if text_task.problem(config):
        pytest.skip(f"{text_task.problem(config)} (.ci/run prepares it)")
    config.dtype = "float32"
    results, saved = train_steps(config, tmp_path, steps=2)  # its warm-up is 1 step
    initial = checkpoint.Checkpointer(str(tmp_path), create=False).restore_arrays(1)
    assert_trained(results, saved, initial)
