"""Test setup: eight simulated CPU devices, fixed before JAX starts."""

import os

_OWN_FLAGS = {
    "--xla_force_host_platform_device_count": "8",
    # The tests compile hundreds of small programs and run each a few steps: LLVM's O0 halves
    # compile time (init 11 s -> 2.4 s, a SimCLR step 10 s -> 6 s) for steps twice as slow.
    # XLA's HLO passes are unchanged; the last bits of a result may move, and every comparison
    # runs both sides under these flags or within a tolerance. Runs and benchmarks keep XLA's 3.
    "--xla_backend_optimization_level": "0",
}
# A user's own setting of these wins; pytest-xdist workers inherit the controller's environment.
_flags = os.environ.get("XLA_FLAGS", "").split()
_given = {f.split("=")[0] for f in _flags}
os.environ["XLA_FLAGS"] = " ".join(
    _flags + [f"{name}={value}" for name, value in _OWN_FLAGS.items() if name not in _given]
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The end-to-end tests start many processes that compile the same small programs: a persistent
# compilation cache shared by the session's processes saves most of their compile time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssl_jax_jit_cache_")

# Scripts the tests start in other interpreters (the GCS emulator's own venv), not test modules.
collect_ignore_glob = ["tools/*"]
