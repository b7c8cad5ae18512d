"""One pretraining run (a few steps, kNN monitor) and its linear evaluation on a folder: dataset,
in this process; prints the process's peak RSS in KiB. Run by test_eval_memory.py."""

import resource
import sys

from configs import linear_eval, simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.evaluation import linear


def main(folder: str, workdir: str, image_size: str) -> None:
    config = simclr_fashion_mnist.get_config("runlocal")
    config.dataset = f"folder:{folder}"
    config.image_size = int(image_size)
    config.model.width_multiplier = 0.0625
    config.model.stem = "imagenet"
    config.total_steps = 2
    config.batch_size = 16
    config.plots = False
    config.probe.enabled = False
    # The whole splits: what must not grow is per-image memory, not a cap hiding it.
    config.knn.max_memory_examples = None
    config.knn.max_test_examples = None
    train.run(config, workdir)
    evaluation = linear_eval.get_config("runlocal")
    evaluation.max_train_examples = None
    evaluation.max_test_examples = None
    evaluation.compare_random_init = False
    evaluation.epochs = 1
    linear.run(evaluation, workdir)
    print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
