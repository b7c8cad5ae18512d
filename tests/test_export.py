"""Exported encoders: same features as the workdir's, atomic writes, mismatches named early.

The workdir is the checkpointed stand-in of test_linear_eval (random weights, no training).
"""

import json
import os

import jax
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
from test_linear_eval import make_pretrain_workdir

from configs import simclr_fashion_mnist
from ssl_jax import export
from ssl_jax.evaluation import pretrained
from ssl_jax.models import load_encoder
from ssl_jax.models.interop import exported


@pytest.fixture(scope="module")
def simclr_export(tmp_path_factory):
    workdir = make_pretrain_workdir(tmp_path_factory.mktemp("simclr"), simclr_fashion_mnist)
    out = str(tmp_path_factory.mktemp("exports") / "encoder")
    return workdir, out, export.export(workdir, out)


def test_exported_encoder_gives_the_workdirs_features_bitwise(simclr_export):
    workdir, out, metadata = simclr_export
    run = pretrained.load(workdir)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    expected = np.asarray(jax.jit(run.method.encode)(run.variables, images))
    encoder = load_encoder(out)
    np.testing.assert_array_equal(np.asarray(encoder(images)), expected)
    assert expected.shape == (4, metadata["feature_dim"])
    # The encoder alone: no head, optimiser or method state; BN statistics kept.
    keys = safetensors_numpy.load_file(os.path.join(out, exported.WEIGHTS_FILE)).keys()
    assert {key.split("/")[0] for key in keys} == {"params", "batch_stats"}
    assert not any("head" in key for key in keys)
    assert metadata["source"] == {
        "workdir": workdir, "step": 4, "method": "simclr", "dataset": "fashion_mnist"
    }  # fmt: skip
    assert metadata["model"]["name"] == "resnet10" and metadata["input"]["image_size"] == 28


def test_failed_write_leaves_nothing_partial_and_keeps_the_old_export(simclr_export, monkeypatch):
    _, out, _ = simclr_export
    parent = os.path.dirname(out)
    before = sorted(os.listdir(parent))
    old_bytes = open(os.path.join(out, exported.WEIGHTS_FILE), "rb").read()
    variables = {"params": {"w": np.ones((3,), np.float32)}, "batch_stats": {}}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(exported.json, "dump", fail)  # after the weights file is written
    with pytest.raises(OSError, match="disk full"):
        exported.write(os.path.join(parent, "new"), variables, {"kind": "image"})
    with pytest.raises(OSError, match="disk full"):
        exported.write(out, variables, {"kind": "image"}, overwrite=True)
    assert sorted(os.listdir(parent)) == before
    assert open(os.path.join(out, exported.WEIGHTS_FILE), "rb").read() == old_bytes
    with pytest.raises(FileExistsError, match="--overwrite"):
        exported.write(out, variables, {"kind": "image"})


def test_other_architecture_names_first_parameter_before_compiling(simclr_export, tmp_path):
    _, out, metadata = simclr_export
    wider = tmp_path / "wider"
    wider.mkdir()
    os.link(os.path.join(out, exported.WEIGHTS_FILE), wider / exported.WEIGHTS_FILE)
    metadata = dict(metadata, model=dict(metadata["model"], width_multiplier=0.5))
    (wider / exported.METADATA_FILE).write_text(json.dumps(metadata))
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(event) if "backend_compile" in event else None
    )
    with pytest.raises(exported.ShapeMismatchError) as error:
        load_encoder(str(wider))
    message = str(error.value)
    assert "\n" not in message and "params/" in message
    first = message.split("parameter ")[1].split()[0]
    found = safetensors_numpy.load_file(str(wider / exported.WEIGHTS_FILE))[first].shape
    model = exported.build_module(metadata)
    wanted = tuple(exported.variable_shapes(model, metadata)[first].shape)
    assert found != wanted and f"has shape {found} but the model expects {wanted}" in message
    assert not compiles


def test_workdir_without_a_run_is_named_and_nothing_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json") as error:
        export.export(str(tmp_path), str(tmp_path / "x"))
    assert "\n" not in str(error.value) and not os.path.exists(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="ssl_jax.export"):
        load_encoder(str(tmp_path))
