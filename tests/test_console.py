"""The console of a run: TensorFlow's native start-up lines stay off it unless asked for."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a run does: the entry point starts TF, then the input pipelines import it as usual.
START = (
    "from ssl_jax import main; main._start_tensorflow_quietly(); import tensorflow as tf; "
    "tf.config.set_visible_devices([], 'GPU'); print('started')"
)


def start_tensorflow(**env):
    environment = {k: v for k, v in os.environ.items() if k != "SSL_JAX_VERBOSE"}
    return subprocess.run(
        [sys.executable, "-c", START], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**environment, **env},
    )  # fmt: skip


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_only_when_asked_for(verbose):
    result = start_tensorflow(**({"SSL_JAX_VERBOSE": "1"} if verbose else {}))
    assert result.returncode == 0 and result.stdout.strip() == "started", result.stderr[-2000:]
    # On a machine without a GPU TF probes CUDA at import; with one, TF still logs its start.
    native = [line for line in result.stderr.splitlines() if ".cc:" in line]
    assert bool(native) == verbose, result.stderr[-2000:]
