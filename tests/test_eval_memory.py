"""Evaluation memory does not grow with the dataset: pretraining with the kNN monitor and linear
evaluation on a folder: dataset of N and 2N 256-px JPEGs at 64 px, whole splits, peak RSS."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2,000 train + 500 test JPEGs, then twice that. Holding a split's decoded files (256-320 px)
# would add ~0.5 GB per 2,000 images; the steps and evaluation run at 64 px to keep the test short.
N = 2000
IMAGE_SIZE = 64


def make_folder(root, originals, size):
    """``root/{train,test}/{a,b}``: ``size`` train, ``size / 4`` test images, the files of
    ``originals`` reused (hard links: the same bytes under new names) once they run out."""
    for split, count in (("train", size), ("test", size // 4)):
        for index in range(count):
            folder = os.path.join(root, split, "ab"[index % 2])
            os.makedirs(folder, exist_ok=True)
            os.link(originals[index % len(originals)], os.path.join(folder, f"{index}.jpg"))


def peak_rss_kib(folder, workdir):
    # No persistent compilation cache: otherwise the first child compiles (a ~350 MB spike) and
    # the second does not, and the comparison would favour the larger dataset.
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "eval_memory_child.py"), folder, workdir,
         str(IMAGE_SIZE)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [x for x in completed.stdout.splitlines() if x.startswith("peak_rss_kib")][-1]
    return int(line.split()[1])


@pytest.mark.slow
def test_doubling_the_images_raises_peak_rss_by_less_than_ten_percent(tmp_path):
    rng = np.random.default_rng(0)
    originals = []
    os.makedirs(tmp_path / "unique")
    for index in range(N + N // 4):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        path = str(tmp_path / "unique" / f"{index}.jpg")
        Image.fromarray(small).resize((256 + index % 64, 256), Image.BILINEAR).save(path)
        originals.append(path)
    peaks = {}
    for count in (N, 2 * N):
        root = str(tmp_path / f"n{count}")
        make_folder(root, originals, count)
        peaks[count] = peak_rss_kib(root, str(tmp_path / f"work{count}"))
    growth = peaks[2 * N] / peaks[N] - 1
    print(f"peak RSS: {peaks[N] / 1024:.0f} MiB at {N} images, {peaks[2 * N] / 1024:.0f} MiB at"
          f" {2 * N}: {100 * growth:+.1f}%")  # fmt: skip
    assert growth < 0.10
