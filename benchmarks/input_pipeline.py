"""Host input pipeline, two-view images/s per core on ImageNet-size JPEGs: ssl_jax's tf.data
host crops (``images.train_batches``) against a torchvision DataLoader on the same files and cores.

python benchmarks/input_pipeline.py [--quick] [--cores=2 --rounds=3 --round_s=10 --images=3000]
Prints the table on stderr and one JSON line on stdout.

The folder of JPEGs is built once (cached under --data_dir) from photos that ship offline:
scikit-image's data photos and the ImageNet samples in foolbox's wheel, each re-encoded at many
crops, sizes (longer side 333-500 px, ImageNet's usual shapes) and qualities. ssl_jax's side is
what the trainer is fed: per image one decode and two random resized crops (scale 0.08-1)
resized to 224 (``images._resize_view``), uint8 [b, 2, 224, 224, 3]; the flip is applied later
on the device. torchvision's side is the usual PIL recipe: open, convert to RGB,
RandomResizedCrop(224) + RandomHorizontalFlip twice, uint8 tensors (PILToTensor), num_workers =
cores. Both processes are pinned to the same cores (sched_setaffinity; tf.data's private
threadpool has as many threads; its shuffle buffer is the same share of the epoch as the
trainer's 50,000 on ImageNet). A round is a fresh pass of a fixed number of images (about
--round_s seconds of work, from a calibration pass), timed from its first request to its last
batch, so nothing prefetched while the other side ran is counted. Each round also counts the
CPU-seconds its side used (process, threads and loader workers, from /proc): images per
CPU-second is the per-core rate that holds on shared cores, and sizes the cores for one H100.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
import zipfile

import harness

_SCRIPT = os.path.abspath(__file__)
_DATA_DIR = "/tmp/ssl_jax_input_pipeline"
# Width / height of ImageNet's common shapes (500x375, 500x333, square, and portrait ones).
_ASPECTS = (4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3)
# Photos among scikit-image's bundled data (drawings, text, microscopy and grey images left out).
_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left",
                   "motorcycle_right", "hubble_deep_field", "retina")  # fmt: skip
_FOOLBOX = "foolbox==3.3.4"
_TEST_IMAGES = 64
# The trainer's shuffle buffer over ImageNet's train split: the share of an epoch each pass of
# the pipeline fills before its first batch, kept at that share on the small folder here.
_TRAINER_BUFFER, _IMAGENET_TRAIN = 50_000, 1_281_167
_CROP_SIZE = 224


# --- the folder of JPEGs (built in the torch venv, which has PIL and scikit-image) -----------


def _source_photos(wheel_dir: str) -> list:
    """The original photos as RGB PIL images: scikit-image's, then foolbox's ImageNet samples."""
    import skimage
    from PIL import Image

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = []
    for name in _SKIMAGE_PHOTOS:
        found = sorted(glob.glob(os.path.join(data, name + ".*")))
        if found:
            photos.append(Image.open(found[0]).convert("RGB"))
    wheels = glob.glob(os.path.join(wheel_dir, "foolbox-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        for member in sorted(wheel.namelist()):
            if member.startswith("foolbox/data/imagenet_"):
                with wheel.open(member) as f:
                    photos.append(Image.open(f).convert("RGB"))
    return photos


def build_folder(path: str, count: int) -> None:
    """``count`` distinct train JPEGs (one class per source photo) and a small test split."""
    import numpy as np
    from PIL import Image

    wheel_dir = os.path.join(path, "_wheel")
    if not glob.glob(os.path.join(wheel_dir, "foolbox-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", _FOOLBOX,
                        "-d", wheel_dir], check=True)  # fmt: skip
    photos = _source_photos(wheel_dir)
    if len(photos) < 10:
        raise SystemExit(f"found only {len(photos)} source photos; check scikit-image / foolbox.")
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("test", _TEST_IMAGES)):
        for i in range(n):
            label = i % len(photos)
            photo = photos[label]
            aspect = _ASPECTS[rng.integers(len(_ASPECTS))]
            longer = int(rng.integers(333, 501))
            width, height = (longer, round(longer / aspect)) if aspect >= 1 else (
                round(longer * aspect), longer)  # fmt: skip
            # A window of the source with the target's aspect and 50-100% of the largest one.
            src_w, src_h = photo.size
            full_w = min(src_w, src_h * width / height)
            frac = float(np.sqrt(rng.uniform(0.5, 1.0)))
            box_w, box_h = full_w * frac, full_w * frac * height / width
            x0 = rng.uniform(0, src_w - box_w)
            y0 = rng.uniform(0, src_h - box_h)
            image = photo.resize((width, height), Image.BICUBIC, (x0, y0, x0 + box_w, y0 + box_h))
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            folder = os.path.join(path, split, f"class_{label:02d}")
            os.makedirs(folder, exist_ok=True)
            image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=int(rng.integers(70, 96)))
    with open(os.path.join(path, "COMPLETE"), "w") as f:
        json.dump({"train": count, "test": _TEST_IMAGES, "sources": len(photos)}, f)


def ensure_folder(data_dir: str, count: int, torch_python: str) -> tuple[str, dict]:
    path = os.path.join(data_dir, f"jpegs_{count}")
    marker = os.path.join(path, "COMPLETE")
    if not os.path.exists(marker):
        has_skimage = subprocess.run([torch_python, "-c", "import skimage"], capture_output=True)
        if has_skimage.returncode:
            subprocess.run([torch_python, "-m", "pip", "install", "--quiet", "scikit-image"],
                           check=True)  # fmt: skip
        print(f"building {count} JPEGs in {path}", file=sys.stderr)
        subprocess.run([torch_python, _SCRIPT, f"--build={path}", f"--images={count}"], check=True)
    with open(marker) as f:
        return path, json.load(f)


# --- the two sides ------------------------------------------------------------------------------


def _pin(cores: list[int]) -> None:
    os.sched_setaffinity(0, cores)


def cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process, its threads and its live
    descendants (torchvision's loader workers): the work a side did, whatever else ran.

    Wall-clock rates on shared cores measure the neighbours too; CPU time does not.
    """
    ticks, total, pending = os.sysconf("SC_CLK_TCK"), 0, [os.getpid()]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                # Fields after the parenthesised name: utime and stime are the 12th and 13th.
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):
            continue  # a thread or worker that ended meanwhile
    return total / ticks


def _calibrated(run_pass, batch_size: int, round_s: float) -> tuple[int, float]:
    """Batches per round (about ``round_s`` seconds) from a short timed pass after a warm-up."""
    run_pass(2)
    probe = 8
    seconds = run_pass(probe)
    rate = probe * batch_size / seconds
    return max(probe, round(rate * round_s / batch_size)), rate


def jax_worker(args: dict) -> tuple[dict, callable]:
    _pin(args["cores"])
    import tensorflow as tf

    from ssl_jax.vision import data as images

    threads = len(args["cores"])
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    default_options = images._options

    def options():
        # As many tf.data threads as pinned cores, as torchvision gets one worker per core.
        found = default_options()
        found.threading.private_threadpool_size = threads
        return found

    images._options = options
    dataset = images.describe(f"folder:{args['path']}", image_size=_CROP_SIZE)
    if not dataset.host_crops:
        raise SystemExit(f"{args['path']}: expected a mixed-size folder (host crops).")
    batch = args["batch_size"]
    seed, cpu = [0], [0.0]

    def run_pass(batches: int) -> float:
        seed[0] += 1
        stream = images.train_batches(
            dataset, local_batch_size=batch, seed=seed[0], shuffle_buffer=args["shuffle_buffer"]
        )
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for _ in range(batches):
            shape = next(stream)["image"].shape
        seconds, cpu[0] = time.perf_counter() - start, cpu_seconds() - cpu_start
        assert shape == (batch, 2, _CROP_SIZE, _CROP_SIZE, 3), shape
        del stream
        return seconds

    batches, probe_rate = _calibrated(run_pass, batch, args["round_s"])

    def run_round() -> dict:
        seconds = run_pass(batches)
        return {"images_per_s": batches * batch / seconds,
                "images_per_cpu_s": batches * batch / max(cpu[0], 1e-9)}  # fmt: skip

    info = {"tensorflow": tf.__version__, "batches_per_round": batches,
            "probe_images_per_s": round(probe_rate, 1), "tf_data_threads": threads}  # fmt: skip
    return info, run_round


def torch_worker(args: dict) -> tuple[dict, callable]:
    _pin(args["cores"])
    import PIL
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(len(args["cores"]))
    files = sorted(glob.glob(os.path.join(args["path"], "train", "*", "*.jpg")))
    view = transforms.Compose([
        transforms.RandomResizedCrop(_CROP_SIZE, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])  # fmt: skip

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            with Image.open(files[index]) as image:
                image = image.convert("RGB")
            return torch.stack([view(image), view(image)]), index

    class Draws(torch.utils.data.Sampler):
        """Random indices, ``count`` per pass (several permutations when it exceeds the files)."""

        def __init__(self):
            self.count = 0

        def __len__(self):
            return self.count

        def __iter__(self):
            drawn = 0
            while drawn < self.count:
                yield from torch.randperm(len(files))[: self.count - drawn].tolist()
                drawn = min(self.count, drawn + len(files))

    draws = Draws()
    batch = args["batch_size"]
    cpu = [0.0]
    loader = torch.utils.data.DataLoader(
        TwoViews(), batch_size=batch, sampler=draws, num_workers=len(args["cores"]),
        persistent_workers=True, prefetch_factor=2, drop_last=True,
    )  # fmt: skip

    def run_pass(batches: int) -> float:
        draws.count = batches * batch
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for views, _ in loader:
            shape = tuple(views.shape)
        seconds, cpu[0] = time.perf_counter() - start, cpu_seconds() - cpu_start
        assert shape == (batch, 2, 3, _CROP_SIZE, _CROP_SIZE), shape
        return seconds

    batches, probe_rate = _calibrated(run_pass, batch, args["round_s"])

    def run_round() -> dict:
        seconds = run_pass(batches)
        return {"images_per_s": batches * batch / seconds,
                "images_per_cpu_s": batches * batch / max(cpu[0], 1e-9)}  # fmt: skip

    info = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "pillow": PIL.__version__, "loader_workers": len(args["cores"]),
            "batches_per_round": batches, "probe_images_per_s": round(probe_rate, 1)}  # fmt: skip
    return info, run_round


# --- the table ----------------------------------------------------------------------------------


def table_rows(record: dict) -> list[str]:
    """Rows for ``results_table.py``'s table (benchmark | ssl_jax | anchor | ratio)."""
    cores = record["cores"]
    return [
        f"| Host input pipeline, two views 224 px from {record['images']} JPEGs "
        f"(333-500 px), {cores} cores | {record['jax']['images_per_cpu_s']} img per CPU-s "
        f"(tf.data host crops) | "
        f"{record['torch']['images_per_cpu_s']} img per CPU-s (torchvision DataLoader, PIL, "
        f"{cores} workers) | {record['jax_over_torch_cpu']}x |",
        f"| Host cores for one H100's ResNet-50 SimCLR step (~{record['h100_images_per_s']} "
        f"two-view img/s, assumed) | {record['h100_cores_jax']} cores | "
        f"{record['h100_cores_torch']} cores | |",
    ]


def _summary(record: dict) -> str:
    jax_side, torch_side = record["jax"], record["torch"]
    lines = [
        "| pipeline | images/s (2 views) | images/s per core (wall) | images per CPU-second |"
        " cores for one H100 |",
        "|---|---|---|---|---|",
        f"| ssl_jax (tf.data, host crops) | {jax_side['images_per_s']} | "
        f"{jax_side['images_per_s_per_core']} | {jax_side['images_per_cpu_s']} | "
        f"{record['h100_cores_jax']} |",
        f"| torchvision DataLoader (PIL) | {torch_side['images_per_s']} | "
        f"{torch_side['images_per_s_per_core']} | {torch_side['images_per_cpu_s']} | "
        f"{record['h100_cores_torch']} |",
        f"| ratio ssl_jax / torchvision | {record['jax_over_torch']}x | | "
        f"{record['jax_over_torch_cpu']}x | (goal >= 1.5x) |",
        "",
        f"{record['cores']} cores, {record['rounds']} A/B rounds, medians; per-round img/s: "
        f"ssl_jax {jax_side['rounds']}, torchvision {torch_side['rounds']}; per CPU-second: "
        f"ssl_jax {jax_side['rounds_per_cpu_s']}, torchvision {torch_side['rounds_per_cpu_s']}; "
        f"load average {record['load_avg_start']} -> {record['machine']['load_avg_1m']} (1 min). "
        f"H100: {record['a100_images_per_s']} img/s per A100 (supervised ResNet-50) x "
        f"{record['h100_over_a100']} / 2 views = {record['h100_images_per_s']} two-view img/s; "
        "cores = that / images per CPU-second.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("jax", "torch"))
    parser.add_argument("--build", help="(internal) build the JPEG folder at this path")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--data_dir", default=_DATA_DIR, help="where the JPEG folder is cached")
    parser.add_argument("--images", type=int, default=3000, help="train JPEGs in the folder")
    parser.add_argument("--cores", type=int, default=2, help="host cores each side may use")
    parser.add_argument("--batch_size", type=int, default=64, help="images (2 views each)")
    parser.add_argument("--round_s", type=float, default=10.0, help="seconds of work per round")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument(
        "--a100_images_per_s",
        type=float,
        default=2500.0,
        help="supervised ResNet-50 training img/s on one A100 (NVIDIA's recipes)",
    )
    parser.add_argument("--h100_over_a100", type=float, default=2.0,
                        help="assumed H100 / A100 ResNet-50 training speed")  # fmt: skip
    args = parser.parse_args()
    if args.build:
        build_folder(args.build, args.images)
        return
    if args.worker:
        harness.serve({"jax": jax_worker, "torch": torch_worker}[args.worker])
        return
    if args.quick:
        args.images, args.round_s, args.rounds, args.batch_size = 600, 2.0, 2, 32
    available = sorted(os.sched_getaffinity(0))
    if args.cores > len(available):
        raise SystemExit(f"--cores={args.cores} but only {len(available)} cores available.")
    cores = available[: args.cores]
    load_start = round(os.getloadavg()[0], 2)
    torch_python = harness.torch_python()
    path, built = ensure_folder(args.data_dir, args.images, torch_python)
    buffer = max(16, round(built["train"] * _TRAINER_BUFFER / _IMAGENET_TRAIN))
    setup = {"path": path, "cores": cores, "batch_size": args.batch_size,
             "round_s": args.round_s, "shuffle_buffer": buffer}  # fmt: skip
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    workers = [
        harness.Worker(harness.jax_python(), _SCRIPT, "jax", setup, env),
        harness.Worker(torch_python, _SCRIPT, "torch", setup, env),
    ]
    rounds = harness.alternate(workers, args.rounds)
    h100 = args.a100_images_per_s * args.h100_over_a100 / 2
    record = {"benchmark": "input_pipeline", "images": built["train"],
              "source_photos": built["sources"], "image_size": _CROP_SIZE, "cores": args.cores,
              "batch_size": args.batch_size, "rounds": args.rounds, "round_s": args.round_s,
              "shuffle_buffer": buffer,
              "load_avg_start": load_start, "a100_images_per_s": args.a100_images_per_s,
              "h100_over_a100": args.h100_over_a100, "h100_images_per_s": round(h100)}  # fmt: skip
    rates, cpu_rates = {}, {}
    for name, worker, side in zip(("jax", "torch"), workers, rounds, strict=True):
        rate = harness.median([r["images_per_s"] for r in side])
        rates[name] = rate
        cpu_rates[name] = harness.median([r["images_per_cpu_s"] for r in side])
        record[name] = {**worker.info, "images_per_s": round(rate, 1),
                        "images_per_s_per_core": round(rate / args.cores, 1),
                        "images_per_cpu_s": round(cpu_rates[name], 1),
                        "rounds": [round(r["images_per_s"], 1) for r in side],
                        "rounds_per_cpu_s": [round(r["images_per_cpu_s"], 1)
                                             for r in side]}  # fmt: skip
        record[f"h100_cores_{name}"] = round(h100 / cpu_rates[name], 1)
    record["jax_over_torch"] = round(rates["jax"] / rates["torch"], 2)
    record["jax_over_torch_cpu"] = round(cpu_rates["jax"] / cpu_rates["torch"], 2)
    record["machine"] = harness.machine()
    print(_summary(record), file=sys.stderr)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
