"""Where the host pipeline's CPU goes: decoding alone against decoding plus the two crops.

python benchmarks/host_crop_profile.py [--folder=/tmp/ssl_jax_input_pipeline/jpegs_3000]
    [--images=600]
Runs both as one tf.data map (2 parallel calls, batches of 64) over the same JPEGs (the folder
benchmarks/input_pipeline.py builds) and prints images per CPU-second for each; the share of
decoding in a host-crop image is the ratio of the two.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/ssl_jax_input_pipeline/jpegs_3000")
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    sys.path.insert(0, str(harness.REPO))
    import tensorflow as tf

    from ssl_jax.vision import data

    files = sorted(glob.glob(os.path.join(args.folder, "train", "*", "*.jpg")))[: args.images]
    if not files:
        raise SystemExit(
            f"no JPEGs under {args.folder}/train: run benchmarks/input_pipeline.py once."
        )
    blobs = [open(path, "rb").read() for path in files]
    source = tf.data.Dataset.from_tensor_slices(blobs)
    dataset = type("Dataset", (), {"image_size": 224, "channels": 3})()
    crops = data._two_crops(dataset, (0.08, 1.0))

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.reduce_sum(tf.cast(image[:1, :1], tf.int32))

    def two_crops(encoded):
        return crops(encoded, 0, tf.constant([1, 2], tf.int64))["image"]

    record = {"benchmark": "host_crop_profile", "images": len(blobs)}
    for name, fn in (("decode", decode), ("decode_and_two_crops", two_crops)):
        pipeline = source.map(fn, num_parallel_calls=2).batch(64)
        start = time.process_time()
        for _ in pipeline:
            pass
        record[f"{name}_images_per_cpu_s"] = len(blobs) / (time.process_time() - start)
    record["decode_share"] = (
        record["decode_and_two_crops_images_per_cpu_s"] / record["decode_images_per_cpu_s"]
    )
    record["machine"] = harness.machine()
    print(json.dumps(record))


if __name__ == "__main__":
    main()
