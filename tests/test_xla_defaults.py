"""``import ssl_jax`` sets its CPU convolution flag before JAX starts, unless told not to."""

import os
import subprocess
import sys

import pytest

from ssl_jax import xla_defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "import os, ssl_jax, jax; jax.devices(); print(os.environ.get('XLA_FLAGS', ''))"


@pytest.mark.parametrize(
    "extra_env, expected",
    [
        ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
         f"--xla_force_host_platform_device_count=2 {xla_defaults.CPU_CONVOLUTIONS_ON_EIGEN}"),
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="},
         "--xla_cpu_experimental_ynn_fusion_type="),
        ({"XLA_FLAGS": "", "SSL_JAX_XLA_DEFAULTS": "0"}, ""),
    ],
    ids=["added", "users_choice_wins", "turned_off"],
)  # fmt: skip
def test_import_sets_the_flag_in_a_fresh_process(extra_env, expected):
    env = {k: v for k, v in os.environ.items() if k != "SSL_JAX_XLA_DEFAULTS"}
    env.update(extra_env, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # XLA accepted the flag (an unknown one aborts the process at jax.devices()).
    lines = result.stdout.splitlines()
    assert lines and lines[-1].strip() == expected, result.stdout[-2000:]


def test_the_flag_is_found_in_this_jaxlib_and_a_made_up_one_is_not():
    # The check reads jaxlib's binaries; a check that always said yes would pass a flag a
    # future jaxlib rejects at start-up.
    assert xla_defaults.jaxlib_knows()
    assert not xla_defaults.jaxlib_knows("--xla_cpu_no_such_flag_for_ssl_jax")


def test_the_flag_stays_out_when_jaxlib_does_not_know_it_or_the_backend_is_not_cpu(monkeypatch):
    flags = "--xla_force_host_platform_device_count=2"
    assert xla_defaults.apply({"XLA_FLAGS": flags, "JAX_PLATFORMS": "cuda"}) == flags
    assert xla_defaults.apply({"XLA_FLAGS": flags, "JAX_PLATFORMS": "tpu,cpu"}) == flags
    monkeypatch.setattr(xla_defaults, "_accelerator_plugin_installed", lambda: True)
    assert xla_defaults.apply({"XLA_FLAGS": flags}) == flags  # a GPU plugin: GPU by default
    assert xla_defaults.apply({"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}) != flags
    monkeypatch.setattr(xla_defaults, "jaxlib_knows", lambda *_: False)
    assert xla_defaults.apply({"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}) == flags
