"""Train-step time of any pretraining configs on this machine, beside the SimCLR default's.

python benchmarks/method_steps.py
    [--configs=configs/mae_fashion_mnist.py,configs/dino_fashion_mnist.py]
    [--rounds=3 --steps=3]
Each config's full (not ``:runlocal``) step is compiled on one device with a batch of its
``batch_size`` random uint8 images at its size, then timed over ``--steps`` steps per round, the
rounds alternating between configs; the anchor, ``configs/simclr_fashion_mnist.py``, runs in the
same process. Prints a table on stderr and one JSON line on stdout (median seconds a step, and
each config's ratio to the anchor). The 800-step budget of the Fashion-MNIST table times a step
gives the training part of its wall time; the kNN evaluations come on top.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import harness

_ANCHOR = "configs/simclr_fashion_mnist.py"


def _load(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], harness.REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _step(path: str):
    import jax
    import numpy as np

    from ssl_jax import train
    from ssl_jax.core import optim, parallel
    from ssl_jax.methods import METHODS

    config = _load(path)
    size = config.get("image_size") or 28
    mesh = parallel.make_mesh(jax.devices()[:1])
    method = METHODS[config.method].make(config, size, parallel.DATA_AXIS, total_steps=800)
    _, tx = optim.from_config(config, 800, warmup_steps=10)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (config.batch_size, size, size, 1), dtype=np.uint8)
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    batch = parallel.to_global({"image": images, "label": np.zeros(len(images), np.int32)}, mesh)
    step = train.make_train_step(method, tx, mesh)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    holder = {"state": state}

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            holder["state"], out = step(holder["state"], batch)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default="configs/mae_fashion_mnist.py,configs/dino_fashion_mnist.py"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(harness.REPO))
    paths = [_ANCHOR] + [p for p in args.configs.split(",") if p and p != _ANCHOR]
    runners = {path: _step(path) for path in paths}
    times = {path: [] for path in paths}
    for _ in range(args.rounds):
        for path in paths:
            times[path].append(runners[path](args.steps))
    medians = {path: harness.median(values) for path, values in times.items()}
    anchor = medians[_ANCHOR]
    record = {
        "benchmark": "method_steps",
        "anchor": _ANCHOR,
        "seconds_per_step": medians,
        "ratio_to_anchor": {path: medians[path] / anchor for path in paths},
        "rounds": times,
        "machine": harness.machine(),
    }
    print("| config | s / step (median) | x SimCLR default |", file=sys.stderr)
    print("|---|---|---|", file=sys.stderr)
    for path in paths:
        print(f"| {path} | {medians[path]:.3f} | {medians[path] / anchor:.2f} |", file=sys.stderr)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
