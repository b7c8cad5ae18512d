"""Command-line entry point: parse flags, hand the config to ``train.run``.

python -m ssl_jax.main --config=configs/simclr_fashion_mnist.py --workdir=DIR [--config.x=y ...]
Multi-process: the same command on every process, joined by the TPU pod or SLURM environment, or
by --coordinator_address=HOST:PORT --num_processes=N --process_id=I (see README "Running at scale").
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import parallel, train

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

    _NOISY = ("/orbax/", "/tensorflow_datasets/", "/clu/metric_writers/")

    def filter(self, record: logging.logging.LogRecord) -> bool:
        return record.levelno >= logging.logging.WARNING or not any(
            part in record.pathname for part in self._NOISY
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
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
    app.run(main)
