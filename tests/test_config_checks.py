"""Bad input at the command line: every field checked before anything is written, fields a run
does not read refused, every entry point answering --help, commands that fix the case at hand."""

import glob
import importlib
import os

import entry_points
import pytest
from absl import flags
from ml_collections import config_flags
from test_data import needs_fashion_mnist

from configs import linear_eval as linear_eval_config
from configs import simclr_fashion_mnist
from ssl_jax import config_checks, train
from ssl_jax.evaluation import linear
from ssl_jax.methods import METHODS
from ssl_jax.text import data as text

REPO = entry_points.REPO
SIMCLR = "configs/simclr_fashion_mnist.py:runlocal"
MOCO = "configs/moco_v2_fashion_mnist.py:runlocal"
MLM = "configs/bert_mlm_ptb.py:runlocal"

# Issue 22's five: each used to train, write or crash instead of stopping with one line.
ISSUE_OVERRIDES = [
    (SIMCLR, "--config.learning_rate=-1", "learning_rate=-1.0 must be > 0"),
    (SIMCLR, "--config.total_steps=-5", "total_steps=-5 must be an integer >= 0"),
    (SIMCLR, "--config.image_size=0", "image_size=0 must be a positive integer"),
    (SIMCLR, "--config.knn.k=0", "knn.k=0 must be a positive integer"),
    (SIMCLR, "--config.dtype=float8", "dtype='float8' must be one of 'float32'"),
]
BAD_OVERRIDES = ISSUE_OVERRIDES + [
    (SIMCLR, "--config.epochs=0", "epochs=0.0 must be > 0"),
    (SIMCLR, "--config.warmup_epochs=-1", "warmup_epochs=-1.0 must be >= 0"),
    (SIMCLR, "--config.warmup_epochs=1", "warmup_epochs=1.0 is 1875 steps, not fewer than"),
    (MLM, "--config.warmup_steps=10", "warmup_steps=10 must be fewer than total_steps=4"),
    (SIMCLR, "--config.weight_decay=-0.1", "weight_decay=-0.1 must be >= 0"),
    (SIMCLR, "--config.momentum=1.0", "momentum=1.0 must be in [0, 1)"),
    (SIMCLR, "--config.adam_b2=1.5", "adam_b2=1.5 must be in [0, 1)"),
    (SIMCLR, "--config.adam_eps=0", "adam_eps=0.0 must be > 0"),
    (SIMCLR, "--config.clip_global_norm=0", "clip_global_norm=0.0 must be > 0, or None"),
    (SIMCLR, "--config.optimizer=adam", "optimizer='adam' must be one of 'lars', 'sgd'"),
    (SIMCLR, "--config.schedule=step", "schedule='step' must be one of 'cosine'"),
    (SIMCLR, "--config.lr_scaling=quadratic", "lr_scaling='quadratic' must be one of"),
    (SIMCLR, "--config.seed=-1", "seed=-1 must be an integer >= 0"),
    (SIMCLR, "--config.shuffle_buffer=0", "shuffle_buffer=0 must be a positive integer"),
    (SIMCLR, "--config.log_every_steps=0", "log_every_steps=0 must be a positive integer"),
    (SIMCLR, "--config.eval_every_steps=-4", "eval_every_steps=-4 must be a positive"),
    (SIMCLR, "--config.keep_checkpoints=0", "keep_checkpoints=0 must be a positive integer"),
    (SIMCLR, "--config.skip_nonfinite_steps=-1", "skip_nonfinite_steps=-1 must be an integer"),
    (SIMCLR, "--config.augment.jitter_prob=1.5", "augment.jitter_prob=1.5 must be in [0, 1]"),
    (SIMCLR, "--config.augment.blur_prob=-0.1", "augment.blur_prob=-0.1 must be in [0, 1]"),
    (SIMCLR, "--config.augment.crop_scale=(0.5,1.2)", "augment.crop_scale=(0.5, 1.2) must be"),
    (SIMCLR, "--config.augment.jitter_strength=-1", "augment.jitter_strength=-1.0 must be"),
    (SIMCLR, "--config.head.output_dim=0", "head.output_dim=0 must be a positive integer"),
    (SIMCLR, "--config.model.width_multiplier=0", "model.width_multiplier=0.0 must be > 0"),
    (SIMCLR, "--config.model.stem=tiny", "model.stem='tiny' must be one of"),
    (SIMCLR, "--config.knn.temperature=0", "knn.temperature=0.0 must be > 0"),
    (SIMCLR, "--config.probe.learning_rate=-1", "probe.learning_rate=-1.0 must be > 0"),
    (SIMCLR, "--config.nt_xent_reduction=sum", "nt_xent_reduction='sum' must be one of"),
    (SIMCLR, "--config.loss_chunk_size=-3", "loss_chunk_size=-3 must be an integer >= 0"),
    (SIMCLR, "--config.dataset=ptb", "dataset='ptb' is a text dataset, but method='simclr'"),
    (MOCO, "--config.moco.momentum=1.0", "moco.momentum=1.0 must be in [0, 1)"),
    (MOCO, "--config.moco.version=4", "moco.version=4 must be 2 or 3"),
    (MOCO, "--config.moco.bn=ghost", "moco.bn='ghost' must be one of 'shuffle', 'sync'"),
    (MOCO, "--config.moco.queue_size=16", "moco.queue_size=16 must be a multiple of batch_size"),
    (MOCO, "--config.predictor.num_layers=0", "predictor.num_layers=0 must be a positive"),
    (MLM, "--config.text.max_seq_len=4", "text.max_seq_len=4 must be an integer >= 8"),
    (MLM, "--config.mlm.mask_rate=1.0", "mlm.mask_rate=1.0 must be in (0, 1)"),
    (MLM, "--config.model.dropout_rate=1.0", "model.dropout_rate=1.0 must be in [0, 1)"),
    (MLM, "--config.model.name=resnet18", "model.name='resnet18' must be one of 'bert_tiny'"),
]


def parsed_config(config_arg: str, *overrides: str):
    """The ConfigDict ``python -m ssl_jax.main --config=... OVERRIDES`` hands to train.run."""
    path, _, arg = config_arg.partition(":")
    argv = ["ssl_jax.main", f"--config={os.path.join(REPO, path)}:{arg}", *overrides]
    flag_values = flags.FlagValues()
    # ssl_jax.main's flag, reading its overrides from this argv rather than sys.argv.
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@needs_fashion_mnist
@pytest.mark.parametrize(
    "config_arg, override, message", BAD_OVERRIDES, ids=[o for _, o, _ in BAD_OVERRIDES]
)
def test_a_bad_override_stops_train_run_with_one_line_before_anything_is_written(
    tmp_path, config_arg, override, message
):
    config = parsed_config(config_arg, override)
    (tmp_path / "keep.txt").write_text("earlier work")
    with pytest.raises(train.ConfigError) as error:
        train.run(config, str(tmp_path))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert files_under(tmp_path) == ["keep.txt"]


@needs_fashion_mnist
def test_every_bad_override_fails_through_the_real_entry_point(tmp_path):
    # All of them as `python -m ssl_jax.main`, forked from one process that imported ssl_jax.
    commands, workdirs = [], []
    for index, (config_arg, override, _) in enumerate(BAD_OVERRIDES):
        workdir = tmp_path / str(index)
        workdir.mkdir()
        (workdir / "keep.txt").write_text("earlier work")
        commands.append(
            ["ssl_jax.main", f"--workdir={workdir}", f"--config={config_arg}", override]
        )
        workdirs.append(workdir)
    results = entry_points.run_commands(commands)
    for (_, override, message), workdir, result in zip(
        BAD_OVERRIDES, workdirs, results, strict=True
    ):
        assert result.returncode != 0, override
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (override, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1] == errors[0], override
        assert "Traceback" not in result.stderr, override
        assert files_under(workdir) == ["keep.txt"], override


# A config holds the fields its method and modality read: other methods' fields are not there
# to override, and the entry point says so in one line.
ABSENT_FIELDS = [
    (SIMCLR, "--config.moco.queue_size=4096", "moco"),
    (MOCO, "--config.loss_chunk_size=64", "loss_chunk_size"),
    (MLM, "--config.augment.blur_prob=0.5", "augment"),
    (MLM, "--config.temperature=0.1", "temperature"),
    # A near miss: ml_collections' message then carries a suggestion after the name.
    (SIMCLR, "--config.warmup_step=10", "warmup_step"),
]


def test_an_override_of_a_field_the_config_does_not_hold_is_one_line(tmp_path):
    results = entry_points.run_commands(
        [["ssl_jax.main", f"--workdir={tmp_path}", f"--config={config_arg}", override]
         for config_arg, override, _ in ABSENT_FIELDS]
    )  # fmt: skip
    for (_, override, field), result in zip(ABSENT_FIELDS, results, strict=True):
        assert result.returncode != 0, override
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: an override (") and f"('{field}'" in last, result.stderr
        assert override.split("=")[0] in last and "Traceback" not in result.stderr, override
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "config_arg, section, message",
    [
        (SIMCLR, {"moco": {"queue_size": 4096}}, "moco.queue_size=4096 is set, but a simclr run"),
        (MOCO, {"loss_chunk_size": 64}, "loss_chunk_size=64 is set, but a moco run does"),
        (MLM, {"augment": {"blur_prob": 0.5}}, "augment.blur_prob=0.5 is set, but a mlm run"),
    ],
)
def test_a_stale_field_copied_from_another_methods_config_is_named(config_arg, section, message):
    import ml_collections

    config = parsed_config(config_arg)
    with config.unlocked():  # as a config file that copies a section in would hold it
        config.update(ml_collections.ConfigDict(section))
    problem = config_checks.problem(config)
    assert problem.startswith(message) and "\n" not in problem


@pytest.mark.parametrize("method", ["moco", "byol", "vicreg"])
def test_a_config_without_the_fields_its_method_reads_is_refused(method):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.method = method  # a SimCLR config holds no moco / byol / vicreg section
    assert config_checks.problem(config).startswith(f"method={method!r} reads the ")


def test_a_text_config_holds_no_image_or_other_method_field():
    from configs import bert_mlm_ptb, common

    config = bert_mlm_ptb.get_config()
    for field in ("augment", "knn", "probe", "moco", "temperature", "image_size", "head"):
        assert field not in config, field
    # and an image config only its own method's sections
    assert "moco" not in common.base("simclr") and "temperature" not in common.base("byol")
    assert common.use_method(common.base("moco"), "simclr").to_dict() == common.base().to_dict()


def shipped_configs():
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        name = os.path.basename(path)[: -len(".py")]
        if name not in ("__init__", "common"):
            for arg in (None, "runlocal"):
                yield name, arg


@pytest.mark.parametrize("name, arg", list(shipped_configs()))
def test_every_shipped_config_passes_the_checks(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    if name == "linear_eval":
        assert config_checks.linear_eval_problem(config) is None
        linear.validate_config(config)
        return
    if name.startswith("finetune"):
        from ssl_jax import finetune

        # The encoder and the dataset are given on the command line; the rest runs as shipped.
        config.encoder, config.dataset = "ENCODER_DIR", "folder:DATA"
        finetune.validate_config(config)
        return
    assert config_checks.problem(config) is None
    METHODS[config.method].validate(config, config.batch_size, 8)


def test_every_field_of_a_shipped_base_has_a_rule_in_some_table():
    from configs import common

    known = {path for table in config_checks.TABLES.values() for t in table for path in t}
    bases = [common.base(method) for method in common.IMAGE_METHODS] + [common.text_base()]
    for base in bases:
        leaves = {path for path, _ in config_checks._leaves(base, known)}
        assert leaves <= known, sorted(leaves - known)


def test_a_field_no_run_reads_is_named():
    config = simclr_fashion_mnist.get_config("runlocal")
    config.lerning_rate = 0.1  # a config file's typo; an override's fails in ml_collections
    assert config_checks.problem(config) == (
        "lerning_rate=0.1 is not a field any run reads: remove it."
    )


def test_linear_eval_fields_are_checked_and_unknown_ones_named():
    config = parsed_config("configs/linear_eval.py:runlocal", "--config.momentum=1.0")
    with pytest.raises(linear.LinearEvalError, match=r"^momentum=1.0 must be in \[0, 1\)\.$"):
        linear.validate_config(config)
    config = linear_eval_config.get_config("runlocal")
    config.knn_k = 5
    with pytest.raises(linear.LinearEvalError, match="knn_k=5 is not a field linear evaluation"):
        linear.validate_config(config)


def test_every_entry_point_answers_help_with_its_usage():
    entry_points_and_flags = {
        "ssl_jax.main": "--workdir",
        "ssl_jax.linear_eval": "--workdir",
        "ssl_jax.report": "--embedding",
        "ssl_jax.data.prepare": "NAME:VOCAB_SIZE",
    }
    results = entry_points.run_commands([[module, "--help"] for module in entry_points_and_flags])
    for (module, flag), result in zip(entry_points_and_flags.items(), results, strict=True):
        assert result.returncode == 0, (module, result.stderr[-2000:])
        assert f"python -m {module}" in result.stdout and flag in result.stdout, module
        assert "Traceback" not in result.stderr, module


@pytest.mark.parametrize(
    "vocab_size, lower_case, data_dir, command",
    [
        (8192, True, None, "python -m ssl_jax.data.prepare ptb:8192"),
        (4096, True, None, "python -m ssl_jax.data.prepare ptb"),
        (4096, False, "/data", "TFDS_DATA_DIR=/data python -m ssl_jax.data.prepare ptb --cased"),
    ],
)
def test_a_missing_vocab_names_the_command_that_builds_that_vocab(
    tmp_path, vocab_size, lower_case, data_dir, command
):
    assert text.prepare_command("ptb", vocab_size, lower_case, data_dir) == command
    dataset = text.describe(
        "ptb", vocab_size=vocab_size, lower_case=lower_case, data_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="does not exist; build it with: ") as error:
        dataset.vocab()
    expected = text.prepare_command("ptb", vocab_size, lower_case, str(tmp_path))
    assert str(error.value).endswith(expected)


def test_prepare_reads_vocab_size_and_case_from_its_arguments():
    from ssl_jax.data import prepare

    args = prepare.parse_args(["prepare", "ptb:8192", "--cased"])
    assert args.names == ["ptb:8192"] and args.cased
    assert prepare.parse_args(["prepare"]).names == ["fashion_mnist"]
