"""The XLA flag ssl_jax sets by default: CPU convolutions outside YNNPACK.

XLA's CPU backend hands convolutions to YNNPACK by default, whose weight-gradient convolutions
are slow at the large spatial sizes of a ResNet's first stages. Leaving convolutions to XLA's
Eigen kernels (dots and elementwise fusions stay on YNNPACK) measured, on 2 cores
(``benchmarks/simclr_step.py``, ResNet-18 SimCLR, 256 images of 32x32, A/B in one run):

- one 3x3 convolution forward + both gradients, 64x32x32x64: 49.5 -> 109.7 GFLOP/s;
- the whole train step: 40.7 s -> 16.2 s (torch eager channels_last: 12.7 s).

The two kernels sum in different orders, so results move in the last bits. ``import ssl_jax``
applies the flag only where it helps and cannot hurt: when the process will compute on XLA:CPU
(``JAX_PLATFORMS`` names cpu first, or it names nothing and no GPU/TPU plugin is installed), and
when the installed jaxlib knows the flag (an unknown name in ``XLA_FLAGS`` aborts the process at
start-up, and experimental flags come and go between releases). It takes effect only if JAX has
not started its backend yet (XLA reads ``XLA_FLAGS`` once). An ``XLA_FLAGS`` that already names
the flag wins, and ``SSL_JAX_XLA_DEFAULTS=0`` keeps XLA's own defaults.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import importlib.util
import mmap
import os

CPU_CONVOLUTIONS_ON_EIGEN = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_NAME = CPU_CONVOLUTIONS_ON_EIGEN.split("=")[0]


def cpu_is_the_backend(environ: dict[str, str]) -> bool:
    """Whether JAX will compute on XLA:CPU, decided without starting a backend.

    >>> [cpu_is_the_backend({"JAX_PLATFORMS": p}) for p in ("cuda,cpu", "cpu", "tpu")]
    [False, True, False]
    """
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not _accelerator_plugin_installed()


@functools.cache
def _accelerator_plugin_installed() -> bool:
    # The places jax itself looks for plugins: the libtpu package, "jax_plugins" entry points
    # (jax-cuda*-plugin, jax-rocm*-plugin) and the jax_plugins namespace package.
    if importlib.util.find_spec("libtpu") is not None:
        return True
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    spec = importlib.util.find_spec("jax_plugins")
    return bool(spec and any(os.listdir(p) for p in spec.submodule_search_locations or ()))


@functools.cache
def jaxlib_knows(flag_name: str = _NAME) -> bool:
    """Whether the installed jaxlib's XLA defines ``flag_name`` (its name is in the binary).

    Reading the shared libraries (memory-mapped; ~0.1 s) is the only check that does not start
    XLA, and starting it with a flag it does not know would end the process.
    """
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    needle = flag_name.lstrip("-").encode()
    for location in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(location, "*.so")):
            if os.path.getsize(path) < 1 << 20:  # Python extension stubs, not XLA
                continue
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(needle) != -1:
                    return True
    return False


def apply(environ: dict[str, str] | None = None) -> str:
    """Adds ``CPU_CONVOLUTIONS_ON_EIGEN`` to ``XLA_FLAGS`` unless turned off or already chosen,
    or the backend is not XLA:CPU, or the installed jaxlib does not know the flag.

    Returns the resulting ``XLA_FLAGS``.

    >>> env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    >>> apply(env) == f"--xla_force_host_platform_device_count=8 {CPU_CONVOLUTIONS_ON_EIGEN}"
    True
    >>> apply({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="})  # the user's choice wins
    '--xla_cpu_experimental_ynn_fusion_type='
    >>> apply({"SSL_JAX_XLA_DEFAULTS": "0"})
    ''
    >>> apply({"JAX_PLATFORMS": "cuda"})  # a CPU-only flag stays out of a GPU job
    ''
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "").split()
    chosen = any(flag.split("=")[0] == _NAME for flag in flags)
    if (
        environ.get("SSL_JAX_XLA_DEFAULTS", "1") != "0"
        and not chosen
        and cpu_is_the_backend(environ)
        and jaxlib_knows()
    ):
        flags.append(CPU_CONVOLUTIONS_ON_EIGEN)
        environ["XLA_FLAGS"] = " ".join(flags)
    return environ.get("XLA_FLAGS", "")
