"""Two-view SimCLR augmentation, views/s: ssl_jax's jitted on-device pipeline against a torchvision
transforms DataLoader with 2 worker processes doing the same recipe, A/B, on each image shape.

python benchmarks/augment_throughput.py [--quick] [--shapes=32x3,28x1 --batch_size=512]
Prints one JSON line.

The recipe (SimCLR's CIFAR one): random resized crop (scale 0.08-1, ratio 3/4-4/3), flip, colour
jitter of strength 0.5 with p 0.8, grayscale with p 0.2 (colour only), no blur. JAX takes a
device-resident uint8 batch; torchvision takes uint8 CHW tensors (``transforms.v2``), and a
round is a whole epoch of its DataLoader, timed from ``iter()``, so no batch made while the other
side ran is counted.
"""

from __future__ import annotations

import argparse
import os
import time

import harness

_SCRIPT = os.path.abspath(__file__)


def jax_worker(args: dict) -> tuple[dict, callable]:
    import jax

    from ssl_jax.vision import augment

    images = _images(args)
    recipe = dict(crop_scale=(0.08, 1.0), jitter_strength=0.5, jitter_prob=0.8,
                  grayscale_prob=0.2, blur_prob=0.0, flip=True)  # fmt: skip
    views = jax.jit(lambda rng, x: augment.simclr_views(rng, x, **recipe))
    device_images = jax.device_put(images)
    jax.block_until_ready(views(jax.random.key(0), device_images))

    def run_round() -> dict:
        start = time.perf_counter()
        for step in range(args["batches"]):
            jax.block_until_ready(views(jax.random.key(step), device_images))
        seconds = time.perf_counter() - start
        return {"views_per_s": 2 * len(images) * args["batches"] / seconds}

    return {"device": jax.devices()[0].device_kind, "jax": jax.__version__}, run_round


def torch_worker(args: dict) -> tuple[dict, callable]:
    import torch
    import torchvision
    from torchvision.transforms import v2

    images = torch.from_numpy(_images(args)).permute(0, 3, 1, 2).contiguous()
    size = args["image_size"]
    ops = [
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    ]
    if args["channels"] == 3:
        ops.append(v2.RandomGrayscale(p=0.2))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    transform = v2.Compose(ops)

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return len(images) * args["batches"]

        def __getitem__(self, index):
            image = images[index % len(images)]
            return transform(image), transform(image)

    loader = torch.utils.data.DataLoader(
        TwoViews(), batch_size=len(images), num_workers=args["workers"],
        persistent_workers=True, prefetch_factor=2,
    )  # fmt: skip

    def run_round() -> dict:
        start = time.perf_counter()
        count = sum(len(view1) + len(view2) for view1, view2 in loader)
        return {"views_per_s": count / (time.perf_counter() - start)}

    run_round()  # starts the workers
    info = {"device": "cpu", "torch": torch.__version__, "torchvision": torchvision.__version__,
            "loader_workers": args["workers"]}  # fmt: skip
    return info, run_round


def _images(args: dict):
    import numpy as np

    shape = (args["batch_size"], args["image_size"], args["image_size"], args["channels"])
    return np.random.default_rng(0).integers(0, 256, shape, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("jax", "torch"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--shapes", default="32x3,28x1", help="SIZExCHANNELS list")
    parser.add_argument("--batch_size", type=int, default=512, help="images (2 views each)")
    parser.add_argument("--batches", type=int, default=10, help="batches per round")
    parser.add_argument("--workers", type=int, default=2, help="torch DataLoader workers")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    args = parser.parse_args()
    if args.worker:
        harness.serve({"jax": jax_worker, "torch": torch_worker}[args.worker])
        return
    if args.quick:
        args.batch_size, args.batches, args.rounds = 64, 2, 2
    record = {"benchmark": "augment_throughput", "batch_size": args.batch_size,
              "batches_per_round": args.batches, "rounds": args.rounds}  # fmt: skip
    for shape in args.shapes.split(","):
        size, channels = (int(part) for part in shape.split("x"))
        setup = {"image_size": size, "channels": channels, "batch_size": args.batch_size,
                 "batches": args.batches, "workers": args.workers}  # fmt: skip
        workers = [
            harness.Worker(harness.jax_python(), _SCRIPT, "jax", setup),
            harness.Worker(harness.torch_python(), _SCRIPT, "torch", setup),
        ]
        rounds = harness.alternate(workers, args.rounds)
        jax_rate, torch_rate = (harness.median([r["views_per_s"] for r in side]) for side in rounds)
        record[f"{size}x{size}x{channels}"] = {
            "jax": {**workers[0].info, "views_per_s": round(jax_rate)},
            "torch": {**workers[1].info, "views_per_s": round(torch_rate)},
            "jax_over_torch": round(jax_rate / torch_rate, 2),
        }
    harness.emit(record)


if __name__ == "__main__":
    main()
