"""The ViT configs and the Wikipedia BERTs no other test trains: two steps of each
``:runlocal`` variant in ``train.run`` (see ``runlocal_training``)."""

import pytest
from runlocal_training import (  # noqa: F401
    assert_trains_two_steps,
    folder,
    image_config_trains,
    no_knn_monitor,
)

from configs import bert_mlm_ptb
from ssl_jax.text import task as text_task

VIT_CONFIGS = [
    "moco_v3_vit_small_imagenet",  # ViT with a frozen patch embedding
    "dino_vit_small_imagenet",  # multi-crop from host crops, teacher and center
    "mae_vit_base_imagenet",  # one view, masked patches
]


@pytest.mark.slow
@pytest.mark.parametrize("name", VIT_CONFIGS)
def test_vit_config_runlocal_trains_in_the_trainer(name, folder, tmp_path):  # noqa: F811
    image_config_trains(name, folder, tmp_path)


@pytest.mark.slow
def test_wikipedia_bert_configs_runlocal_train_in_the_trainer(tmp_path):
    from configs import bert_base_wikipedia, bert_large_wikipedia

    config = bert_base_wikipedia.get_config("runlocal")
    # Under runlocal both are the same tiny BERT (the large model is only the full run's).
    assert bert_large_wikipedia.get_config("runlocal").to_dict() == config.to_dict()
    ptb = bert_mlm_ptb.get_config("runlocal")
    config.dataset, config.text = ptb.dataset, ptb.text
    if text_task.problem(config):
        pytest.skip(f"{text_task.problem(config)} (.ci/run prepares it)")
    config.dtype = "float32"
    assert_trains_two_steps(config, tmp_path)  # its warm-up is 1 step
