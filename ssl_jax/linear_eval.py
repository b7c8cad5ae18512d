"""Command-line entry point for linear evaluation: parse flags, hand them to ``linear.run``.

python -m ssl_jax.linear_eval --config=configs/linear_eval.py --workdir=PRETRAIN_DIR
(an image run's linear classifier; a text run's BBC News probe)
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax.core import parallel
from ssl_jax.evaluation import linear

FLAGS = flags.FLAGS
HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpshort"}


def _define_flags() -> None:
    # Only when run as a program: importing this module (doctests, notebooks) beside
    # ssl_jax.main must not define --workdir twice.
    flags.DEFINE_string("workdir", None, "Workdir of a pretraining run (config.json, checkpoints).")
    config_flags.DEFINE_config_file("config", None, "Config file (configs/linear_eval.py).")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        parallel.initialize()
        results = linear.run(FLAGS.config, FLAGS.workdir)
    except (parallel.StartupError, linear.LinearEvalError, FloatingPointError) as error:
        logging.flush()
        sys.exit(f"error: {error}")
    print("done: " + "  ".join(f"{key} {value:.4f}" for key, value in results.items()), flush=True)


if __name__ == "__main__":
    _define_flags()
    if HELP_FLAGS & set(sys.argv[1:]):  # absl's --help exits with status 1
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main)
