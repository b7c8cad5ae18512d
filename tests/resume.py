"""Helpers of the resume tests: a run that crashes part way, and bit-for-bit tree equality."""

import jax
import numpy as np
import pytest

from ssl_jax import train


class Crash(Exception):
    """What the injected failure raises."""


def run_until_crash(config, workdir, monkeypatch, module, after_batches):
    """``train.run`` whose ``module.train_batches`` stream dies after ``after_batches`` batches."""
    real_batches = module.train_batches

    def crashing(*args, **kwargs):
        for index, batch in enumerate(real_batches(*args, **kwargs)):
            if index == after_batches:
                raise Crash
            yield batch

    with monkeypatch.context() as patch:
        patch.setattr(module, "train_batches", crashing)
        with pytest.raises(Crash):
            train.run(config, str(workdir))


def assert_bitwise_equal(got, want):
    leaves = jax.tree_util.tree_leaves_with_path(want)
    for (path, expected), actual in zip(leaves, jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(actual, expected, err_msg=jax.tree_util.keystr(path))
