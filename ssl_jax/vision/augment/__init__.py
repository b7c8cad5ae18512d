"""SimCLR image augmentations as pure JAX functions of (key, image), one module per kind of op.

They have static shapes and no Python branching on traced values, so they run on device inside a
jitted or shard_mapped train step, one ``vmap`` over the batch.
"""

from ssl_jax.vision.augment.blur import gaussian_blur
from ssl_jax.vision.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    hsv_to_rgb,
    rgb_to_hsv,
    solarize,
    to_grayscale,
)
from ssl_jax.vision.augment.crop import crop_and_resize, random_resized_crop, sample_crop_box
from ssl_jax.vision.augment.views import (
    augment_kwargs,
    check_multi_crop,
    multi_crop_settings,
    multi_crop_views,
    simclr_augment,
    simclr_views,
)

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment_kwargs",
    "check_multi_crop",
    "color_jitter",
    "crop_and_resize",
    "gaussian_blur",
    "hsv_to_rgb",
    "random_resized_crop",
    "rgb_to_hsv",
    "sample_crop_box",
    "simclr_augment",
    "multi_crop_settings",
    "multi_crop_views",
    "simclr_views",
    "solarize",
    "to_grayscale",
]
