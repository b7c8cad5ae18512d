"""The XLA flag ssl_jax sets by default: CPU convolutions outside YNNPACK.

XLA's CPU backend hands convolutions to YNNPACK by default, whose weight-gradient convolutions
are slow at the large spatial sizes of a ResNet's first stages. Leaving convolutions to XLA's
Eigen kernels (dots and elementwise fusions stay on YNNPACK) measured, on 2 cores
(``benchmarks/simclr_step.py``, ResNet-18 SimCLR, 256 images of 32x32, A/B in one run):

- one 3x3 convolution forward + both gradients, 64x32x32x64: 49.5 -> 109.7 GFLOP/s;
- the whole train step: 40.7 s -> 16.2 s (torch eager channels_last: 12.7 s).

The two kernels sum in different orders, so results move in the last bits. ``import ssl_jax``
applies the flag; it takes effect only if JAX has not started its backend yet (XLA reads
``XLA_FLAGS`` once). An ``XLA_FLAGS`` that already names the flag wins, and
``SSL_JAX_XLA_DEFAULTS=0`` keeps XLA's own defaults.
"""

from __future__ import annotations

import os

CPU_CONVOLUTIONS_ON_EIGEN = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def apply(environ: dict[str, str] | None = None) -> str:
    """Adds ``CPU_CONVOLUTIONS_ON_EIGEN`` to ``XLA_FLAGS`` unless turned off or already chosen.

    Returns the resulting ``XLA_FLAGS``.

    >>> env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    >>> apply(env) == f"--xla_force_host_platform_device_count=8 {CPU_CONVOLUTIONS_ON_EIGEN}"
    True
    >>> apply({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="})  # the user's choice wins
    '--xla_cpu_experimental_ynn_fusion_type='
    >>> apply({"SSL_JAX_XLA_DEFAULTS": "0"})
    ''
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "").split()
    name = CPU_CONVOLUTIONS_ON_EIGEN.split("=")[0]
    chosen = any(flag.split("=")[0] == name for flag in flags)
    if environ.get("SSL_JAX_XLA_DEFAULTS", "1") != "0" and not chosen:
        flags.append(CPU_CONVOLUTIONS_ON_EIGEN)
        environ["XLA_FLAGS"] = " ".join(flags)
    return environ.get("XLA_FLAGS", "")
