"""Every shipped pretraining config's ``:runlocal`` variant passes the checks, builds its method
and traces a whole train step on 8 devices: init, loss, collectives, replication types, the
optimiser and the online probe, as the config sets them, abstractly (no compile, no data).

This holds each config at its own dtype (bfloat16 in the ImageNet recipes) without its dataset;
``test_runlocal_training_*`` trains the configs no other test trains, on stand-in data.
"""

import glob
import importlib
import os

import jax
import numpy as np
import optax
import pytest
import test_mlm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_checks, train
from ssl_jax.core import optim, parallel
from ssl_jax.core.probe import OnlineProbe
from ssl_jax.methods import METHODS
from ssl_jax.vision import data as image_data
from ssl_jax.vision import task as image_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Size, channels and classes of the datasets the configs name, as tfds describes them.
DATASETS = {"fashion_mnist": (28, 1, 10), "cifar10": (32, 3, 10), "imagenet2012": (224, 3, 1000)}


def pretraining_configs():
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        name = os.path.basename(path)[: -len(".py")]
        if name in ("__init__", "common") or name.startswith(("finetune", "linear_eval")):
            continue
        yield name


def abstract_batch(config, mesh):
    """The global batch a step of ``config`` gets, as sharded shapes; and one host row of it."""
    n = config.batch_size
    if METHODS[config.method].MODALITY == "text":
        length = config.text.max_seq_len
        shapes = {"token_ids": ((n, length), np.int32), "segment_ids": ((n, length), np.int32)}
        if config.text.nsp:
            shapes["next_sentence_labels"] = ((n,), np.int32)
        if config.text.whole_word_masking:
            shapes["word_starts"] = ((n, length), np.bool_)
        classes = None
    else:
        size, channels, classes = DATASETS[config.dataset]
        size = config.get("image_size") or size
        # Datasets resized on the host arrive as two crops per image ([n, 2, S, S, C]).
        dataset = image_data.describe(config.dataset, config.get("image_size"))
        crops = (2,) if dataset.host_crops else ()
        shapes = {"image": ((n, *crops, size, size, channels), np.uint8), "label": ((n,), np.int32)}
    rows = NamedSharding(mesh, P(parallel.DATA_AXIS))
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=rows) for k, (s, d) in shapes.items()}
    sample = {k: np.zeros((2, *s[1:]), d) for k, (s, d) in shapes.items()}
    if "image" in shapes:  # the trainer initialises from Task.sample_batch: one view an image
        sample["image"] = image_task.sample_batch(config, dataset, 2)["image"]
    return batch, sample, classes


@pytest.mark.parametrize("name", list(pretraining_configs()))
def test_runlocal_config_traces_a_train_step_on_eight_devices(name):
    config = importlib.import_module(f"configs.{name}").get_config("runlocal")
    assert config_checks.problem(config) is None
    module = METHODS[config.method]
    module.validate(config, config.batch_size, 8)
    mesh = parallel.make_mesh()
    batch, sample, classes = abstract_batch(config, mesh)
    total_steps = config.total_steps or 4
    kwargs = {"vocab": test_mlm.VOCAB} if module.MODALITY == "text" else {}
    image_size = sample["image"].shape[1] if "image" in sample else None
    method = module.make(config, image_size, parallel.DATA_AXIS, total_steps=total_steps, **kwargs)
    _, tx = optim.from_config(config, total_steps, warmup_steps=1)
    probe = None
    if classes and config.probe.enabled:
        probe = OnlineProbe(classes, optax.adam(config.probe.learning_rate))
    state = jax.eval_shape(lambda: train.create_state(method, tx, config.seed, sample, mesh, probe))
    step = train.make_train_step(method, tx, mesh, config.parallelism, probe)
    new_state, metrics = jax.eval_shape(step, state, batch)

    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
    assert metrics["loss"].shape == () and metrics["grad_norm"].shape == ()
    assert ("probe_top1" in metrics) == (probe is not None)
    # Parameters stay float32 whatever the compute dtype (bfloat16 in the ImageNet recipes).
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype(np.float32)}
