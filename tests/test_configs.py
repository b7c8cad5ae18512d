"""Config args (``--config=FILE:arg``) and the optimiser fields configs set."""

import doctest

import pytest

from configs import common, moco_v2_imagenet, moco_v3_resnet50_imagenet, simclr_fashion_mnist


@pytest.mark.parametrize(
    "arg", ["runlocal=False", "runlocal=false", "runlocal=FALSE", "runlocal=0"]
)
def test_runlocal_false_keeps_the_full_run(arg):
    config = simclr_fashion_mnist.get_config(arg)
    assert config.total_steps == simclr_fashion_mnist.get_config().total_steps == 800
    assert config.model.width_multiplier == 0.25


@pytest.mark.parametrize("arg", ["runlocal", "runlocal=True", "runlocal=true", "runlocal=1"])
def test_runlocal_true_shrinks_the_run(arg):
    config = simclr_fashion_mnist.get_config(arg)
    assert config.total_steps == 4
    assert config.model.width_multiplier == 0.125


@pytest.mark.parametrize("value", ["yes", "no", "2", "", "Fals"])
def test_a_boolean_arg_with_another_value_is_a_one_line_error(value):
    with pytest.raises(ValueError, match=r"^runlocal=.*true, false, 1 or 0") as error:
        simclr_fashion_mnist.get_config(f"runlocal={value}")
    assert "\n" not in str(error.value)


def test_int_float_and_string_args_keep_their_types():
    assert moco_v2_imagenet.get_config("epochs=800").epochs == 800.0
    config = moco_v3_resnet50_imagenet.get_config("runlocal=false,epochs=300,learning_rate=0.3")
    assert (config.epochs, config.learning_rate, config.total_steps) == (300.0, 0.3, None)
    parsed = common.parse_arg("name=cifar10,steps=7", name="fmnist", steps=1, runlocal=False)
    assert (parsed.name, parsed.steps, parsed.runlocal) == ("cifar10", 7, False)
    with pytest.raises(ValueError, match=r"^steps='seven'.*int"):
        common.parse_arg("steps=seven", steps=1)
    with pytest.raises(ValueError, match="unknown config arg 'step'"):
        common.parse_arg("step=3", steps=1)


def test_parse_arg_docstring_example_holds():
    assert doctest.testmod(common, raise_on_error=True).attempted >= 1


def test_moco_v3_resnet50_follows_facebookresearch_moco_v3():
    """CONFIG.md's 100-epoch ResNet-50 command, main_moco.py's defaults, builder.MoCo_ResNet."""
    config = moco_v3_resnet50_imagenet.get_config()
    assert (config.batch_size, config.epochs, config.warmup_epochs) == (4096, 100.0, 10.0)
    assert (config.optimizer, config.learning_rate, config.lr_scaling) == ("lars", 0.6, "linear")
    assert (config.weight_decay, config.momentum) == (1e-6, 0.9)
    assert config.decay_all_params is False  # moco-v3's LARS skips parameters of rank <= 1
    assert (config.temperature, config.moco.momentum, config.moco.momentum_cosine) == (
        1.0, 0.99, True,
    )  # fmt: skip
    assert config.augment.crop_scale == (0.2, 1.0)  # --crop-min=.2
    # Projector: _build_mlp(2, 2048, 4096, 256), its last BN without affine parameters.
    assert (config.head.num_layers, config.head.hidden_dim, config.head.output_dim) == (
        2, 4096, 256,
    )  # fmt: skip
    assert config.head.use_bn and config.head.last_bn_scale is False
    # Predictor: _build_mlp(2, 256, 4096, 256, last_bn=False).
    assert (config.predictor.num_layers, config.predictor.hidden_dim) == (2, 4096)
    assert config.predictor.last_bn is False
