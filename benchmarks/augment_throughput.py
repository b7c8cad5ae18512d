"""Images/s of SimCLR view generation: ssl_jax's on-device JAX augmentations against the same
recipe written with tf.image in a tf.data pipeline (the host-side anchor), in one process.

python benchmarks/augment_throughput.py [--image_size=32 --channels=3 --batch_size=512]
Prints one JSON line.
"""

import json
import time

import jax
import numpy as np
import tensorflow as tf
from absl import app, flags

from ssl_jax import augment

flags.DEFINE_integer("image_size", 32, "Side of the square images.")
flags.DEFINE_integer("channels", 3, "1 (grey) or 3.")
flags.DEFINE_integer("batch_size", 512, "Images per batch (each yields two views).")
flags.DEFINE_integer("batches", 10, "Timed batches per pipeline.")
FLAGS = flags.FLAGS


def tf_view(image, size, colour):
    """crop (scale 0.08-1, ratio 3/4-4/3) + flip + jitter (p=0.8) + grayscale (p=0.2)."""
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True,
    )  # fmt: skip
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (size, size), antialias=True)
    image = tf.image.random_flip_left_right(image)

    def jitter(x):
        x = tf.image.random_brightness(x, 0.4)
        x = tf.image.random_contrast(x, 0.6, 1.4)
        if colour:
            x = tf.image.random_saturation(x, 0.6, 1.4)
            x = tf.image.random_hue(x, 0.1)
        return tf.clip_by_value(x, 0.0, 1.0)

    image = tf.cond(tf.random.uniform([]) < 0.8, lambda: jitter(image), lambda: image)
    if colour:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        image = tf.cond(tf.random.uniform([]) < 0.2, lambda: grey, lambda: image)
    return image


def main(_):
    size, channels, batch = FLAGS.image_size, FLAGS.channels, FLAGS.batch_size
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, channels), np.uint8)

    views = jax.jit(lambda rng, x: augment.simclr_views(rng, x, jitter_strength=0.5))
    device_images = jax.device_put(images)
    jax.block_until_ready(views(jax.random.PRNGKey(0), device_images))
    start = time.perf_counter()
    for step in range(FLAGS.batches):
        jax.block_until_ready(views(jax.random.PRNGKey(step), device_images))
    jax_rate = 2 * batch * FLAGS.batches / (time.perf_counter() - start)

    colour = channels == 3
    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    ds = (
        ds.map(
            lambda x: (tf_view(x, size, colour), tf_view(x, size, colour)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch)
        .prefetch(2)
    )
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(iterator)
    tf_rate = 2 * batch * FLAGS.batches / (time.perf_counter() - start)

    print(json.dumps({
        "benchmark": "augment_throughput", "image_size": size, "channels": channels,
        "batch_size": batch, "backend": jax.default_backend(),
        "jax_on_device_views_per_s": round(jax_rate), "tf_data_host_views_per_s": round(tf_rate),
        "speedup": round(jax_rate / tf_rate, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    app.run(main)
