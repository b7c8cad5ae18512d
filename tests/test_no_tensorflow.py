"""ssl_jax and its SimCLR train step run where TensorFlow, tfds, clu and ml_collections are absent.

A GPU machine with JAX alone must still import ssl_jax and train: a subprocess whose imports of
those packages fail runs two steps, and they equal the same steps in this process.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSENT = ("tensorflow", "tensorflow_datasets", "tensorflow_text", "clu", "ml_collections")

# On PYTHONPATH with SSL_JAX_HIDE_MODULES: ABSENT look uninstalled (find_spec answers None), the
# same rehearsal benchmarks/device_check.sh --smoke runs.
HIDER = os.path.join(REPO, "benchmarks", "hide_modules")


class AttrDict(dict):
    """A config as attribute-access dicts: what ml_collections gives, without ml_collections."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    @classmethod
    def nested(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.nested(v) for k, v in value.items()})
        return value


def tiny_config():
    from configs import simclr_fashion_mnist  # the child imports this file without it

    config = simclr_fashion_mnist.get_config("runlocal")
    config.model.name = "resnet10"
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    return config


def run_steps(config, out_path):
    """Two SimCLR steps on one device; saves the losses and final parameters to ``out_path``."""
    from ssl_jax import train
    from ssl_jax.core import optim, parallel
    from ssl_jax.methods import simclr

    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    mesh = parallel.make_mesh(jax.devices()[:1])  # one device: the cheapest compile
    method = simclr.make(config, images.shape[1], parallel.DATA_AXIS)
    tx = optim.make_optimizer("lars", optim.make_schedule(0.5, 10, 1), weight_decay=1e-4)
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    step_fn = train.make_train_step(method, tx, mesh)
    batch = parallel.to_global({"image": images, "label": np.zeros(16, np.int32)}, mesh)
    losses = []
    for _ in range(2):
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    np.savez(out_path, np.array(losses), *leaves)


CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    for name in {absent!r}:
        if importlib.util.find_spec(name) is not None:
            raise SystemExit(f"find_spec sees {{name}}: the blocker does not hide it")
        try:
            __import__(name)
        except ImportError:
            continue
        raise SystemExit(f"the blocker let {{name}} import")
    import ssl_jax
    from ssl_jax import losses, masking, models  # the notebook API's pure parts
    from ssl_jax.vision import augment
    import test_no_tensorflow as t
    t.run_steps(t.AttrDict.nested(json.loads(sys.argv[1])), sys.argv[2])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {absent!r})
    print("LOADED", json.dumps(loaded))
    """
)


def test_train_step_runs_without_tensorflow_and_equals_the_usual_step(tmp_path):
    config = tiny_config()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([HIDER, REPO, os.path.join(REPO, "tests")]),
        SSL_JAX_HIDE_MODULES=",".join(ABSENT),
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(absent=ABSENT), config.to_json(),
         str(tmp_path / "child.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.split("LOADED", 1)[1]) == []

    # The usual path: the ml_collections config, TensorFlow importable.
    run_steps(config, tmp_path / "here.npz")
    got, want = np.load(tmp_path / "child.npz"), np.load(tmp_path / "here.npz")
    assert got.files == want.files and len(got.files) > 10
    for name in got.files:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert np.all(np.isfinite(got["arr_0"]))  # the losses
