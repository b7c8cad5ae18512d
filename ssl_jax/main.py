"""Command-line entry point: parse flags, hand the config to ``train.run``.

python -m ssl_jax.main --config=configs/simclr_fashion_mnist.py --workdir=DIR [--config.x=y ...]
Multi-process: the same command on every process, joined by the TPU pod or SLURM environment, or
by --coordinator_address=HOST:PORT --num_processes=N --process_id=I (see README "Running at scale").
"""

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import train
from ssl_jax.core import parallel

FLAGS = flags.FLAGS
HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpshort"}
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and plots.")
config_flags.DEFINE_config_file("config", None, "Config file (a get_config(arg) module).")
flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0; with --num_processes, --process_id."
)
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for the coordinator and all processes."
)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
    """Keeps library INFO chatter (checkpoint I/O details) off the console; warnings still pass."""

    # jax's xla_bridge: the INFO line about each accelerator plugin it probed and did not find.
    _NOISY = ("/orbax/", "/tensorflow_datasets/", "/clu/metric_writers/", "/jax/_src/xla_bridge")

    def filter(self, record: logging.logging.LogRecord) -> bool:
        return record.levelno >= logging.logging.WARNING or not any(
            part in record.pathname for part in self._NOISY
        )


@contextlib.contextmanager
def _native_stderr_held_back():
    """Holds back what native code writes to stderr meanwhile; replays it if the block fails."""
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _start_tensorflow_quietly() -> None:
    """Imports TensorFlow (tf.data and tfds only) with its GPUs hidden, without its start-up lines.

    On machines without a GPU its C++ start-up prints CUDA probing and a ``cuInit`` error before
    any log level applies; SSL_JAX_VERBOSE=1 lets them through. TF-free installs skip this.
    """
    if os.environ.get("SSL_JAX_VERBOSE") or importlib.util.find_spec("tensorflow") is None:
        return
    with _native_stderr_held_back():
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")


def _configs_root() -> str | None:
    """The folder holding ``configs/``: the installed package's parent, else this checkout's."""
    spec = importlib.util.find_spec("configs")
    if spec is not None and spec.submodule_search_locations:
        return os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return checkout if os.path.isdir(os.path.join(checkout, "configs")) else None


def resolve_config_path(argv: list[str]) -> list[str]:
    """``--config=configs/NAME.py[:arg]`` found from any directory: a relative path missing from
    the working directory is looked up beside the ``configs`` package (installed or checkout),
    which then goes on ``sys.path`` so the config's own ``from configs import common`` works.
    """
    root = _configs_root()
    resolved = []
    for i, arg in enumerate(argv):
        prefix = next((p for p in ("--config=", "-config=") if arg.startswith(p)), None)
        if prefix is None and i and argv[i - 1] in ("--config", "-config"):
            prefix = ""
        if prefix is None or root is None:
            resolved.append(arg)
            continue
        path, colon, rest = arg[len(prefix) :].partition(":")
        if path and not os.path.isabs(path) and not os.path.exists(path):
            candidate = os.path.join(root, path)
            if os.path.exists(candidate):
                path = candidate
                if root not in sys.path:
                    sys.path.insert(0, root)
        resolved.append(f"{prefix}{path}{colon}{rest}")
    return resolved


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an override of a field the config does not hold said in one line
    (ml_collections raises a KeyError from deep inside it)."""
    try:
        return FLAGS(argv)
    except (KeyError, AttributeError) as error:
        # ml_collections nests the field's repr in its message, a "Did you mean" hint after it.
        message = str(error)
        name = re.search(r"[A-Za-z_]\w*", message)
        field = name.group() if name else message
        hint = re.search(r'Did you mean "([^"]+)"', message)
        overrides = [arg.split("=")[0] for arg in argv if arg.startswith("--config.")]
        sys.exit(
            f"error: an override ({', '.join(overrides)}) names a field the config does not hold "
            f"({field!r}"
            + (f"; did you mean {hint.group(1)!r}?" if hint else "")
            + "); a config holds only the fields its method and modality read: "
            "remove it, or start from a config of the method that reads it."
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    _start_tensorflow_quietly()
    try:
        parallel.initialize(
            FLAGS.coordinator_address,
            FLAGS.num_processes,
            FLAGS.process_id,
            timeout_s=FLAGS.initialization_timeout,
        )
        results = train.run(FLAGS.config, FLAGS.workdir)
    except (parallel.StartupError, train.ConfigError, FloatingPointError) as error:
        logging.flush()
        sys.exit(f"error: {error}")
    summary = "  ".join(
        f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
        for key, value in results.items()
    )
    print(f"done: {summary}", flush=True)


if __name__ == "__main__":
    if HELP_FLAGS & set(sys.argv[1:]):  # absl's --help exits with status 1
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main, argv=resolve_config_path(sys.argv), flags_parser=parse_flags)
