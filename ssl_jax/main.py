"""Command-line entry point: parse flags, hand the config to ``train.run``.

python -m ssl_jax.main --config=configs/simclr_fashion_mnist.py --workdir=DIR [--config.x=y ...]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and plots.")
config_flags.DEFINE_config_file("config", None, "Config file (a get_config(arg) module).")
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
        results = train.run(FLAGS.config, FLAGS.workdir)
    except (train.ConfigError, FloatingPointError) as error:
        logging.flush()
        sys.exit(f"error: {error}")
    summary = "  ".join(f"{key} {value:.4f}" for key, value in results.items())
    print(f"done: {summary}", flush=True)


if __name__ == "__main__":
    app.run(main)
