"""Makes the packages named in $SSL_JAX_HIDE_MODULES look uninstalled to this Python.

On PYTHONPATH, Python imports this at start-up: a machine with JAX but without TensorFlow is then
rehearsed on one that has it (benchmarks/device_check.sh --smoke, tests/test_no_tensorflow.py).
"""

import os
import re
import sys

_HIDDEN = {
    re.sub(r"[-_.]+", "_", name.strip()).lower()
    for name in os.environ.get("SSL_JAX_HIDE_MODULES", "").split(",")
    if name.strip()
}


def _hidden(name):
    return re.sub(r"[-_.]+", "_", name or "").lower() in _HIDDEN


class _Hide:
    """Wraps a finder: hidden names get None from find_spec, as a package that is not there does
    (a finder that raised instead would break importlib.util.find_spec probes, such as etils.epath's
    for tensorflow, which jax's compilation cache goes through), and no distribution metadata.
    """

    def __init__(self, finder):
        self._finder = finder

    def __getattr__(self, name):
        return getattr(self._finder, name)

    def find_spec(self, name, path=None, target=None):
        if _hidden(name.split(".")[0]) or not hasattr(self._finder, "find_spec"):
            return None
        return self._finder.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        found = getattr(self._finder, "find_distributions", lambda *a, **k: ())(*args, **kwargs)
        return (dist for dist in found if not _hidden(dist.metadata["Name"]))


if _HIDDEN:
    sys.meta_path[:] = [_Hide(finder) for finder in sys.meta_path]
