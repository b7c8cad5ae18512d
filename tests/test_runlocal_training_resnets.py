"""The ResNet image configs no other test trains: two steps of each ``:runlocal`` variant in
``train.run`` (see ``runlocal_training``)."""

import pytest
from runlocal_training import folder, image_config_trains, no_knn_monitor  # noqa: F401

RESNET_CONFIGS = [
    "simclr_cifar10",  # ResNet, CIFAR stem
    "simclr_imagenet",  # ResNet, ImageNet stem, host crops
    "moco_v2_imagenet",  # queue, shuffled BN
    "moco_v3_resnet50_imagenet",  # predictor, symmetric loss, momentum schedule
    "byol_imagenet",
    "simsiam_imagenet",
    "barlow_twins_imagenet",
    "vicreg_imagenet",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", RESNET_CONFIGS)
def test_resnet_config_runlocal_trains_in_the_trainer(name, folder, tmp_path):  # noqa: F811
    image_config_trains(name, folder, tmp_path)
