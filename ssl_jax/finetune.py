"""Transfer of a pretrained encoder: a linear head on another labelled dataset, frozen or tuned.

python -m ssl_jax.finetune --config=configs/finetune.py --config.encoder=DIR_OR_WORKDIR
  --config.dataset=NAME_OR_folder:PATH --config.label_fraction=0.01 --config.mode=frozen|end_to_end
Prints top-1 on the test split beside the same architecture trained from scratch on the same
labels for the same steps.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax.models.interop import exported

MODES = ("frozen", "end_to_end")
FLAGS = flags.FLAGS


class FinetuneError(ValueError):
    """Fine-tuning cannot run as asked; the message says in one line what to change."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``FinetuneError`` naming the first field that cannot run."""
    for field in ("encoder", "dataset"):
        if not config.get(field):
            raise FinetuneError(f"set --config.{field} (see configs/finetune.py).")
    if config.mode not in MODES:
        raise FinetuneError(f"mode={config.mode!r}: use one of {', '.join(MODES)}.")
    if not 0 < config.label_fraction <= 1:
        raise FinetuneError(f"label_fraction={config.label_fraction} must be in (0, 1].")
    for field in ("steps", "batch_size", "eval_batch_size"):
        if config[field] < 1:
            raise FinetuneError(f"{field}={config[field]} must be >= 1.")
    if config.learning_rate <= 0:
        raise FinetuneError(f"learning_rate={config.learning_rate} must be > 0.")


def balanced_subset(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``round(fraction * N / num_classes)`` examples of every class (at least
    one), drawn with ``seed``; all of them for ``fraction == 1``.

    >>> labels = np.array([0, 1] * 50 + [1] * 10)
    >>> subset = balanced_subset(labels, 0.1, 2, seed=0)
    >>> len(subset), np.bincount(labels[subset]).tolist()
    (12, [6, 6])
    """
    if fraction == 1:
        return np.arange(len(labels))
    per_class = max(1, round(fraction * len(labels) / num_classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise FinetuneError(
                f"label_fraction={fraction} asks {per_class} examples of class {label}, which has "
                f"{len(members)}: use a smaller label_fraction."
            )
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def load_any_encoder(path: str, step: int | None = None) -> exported.Encoder:
    """An export folder (``encoder.json``) or a pretraining workdir (``config.json``)."""
    if os.path.isfile(os.path.join(path, exported.METADATA_FILE)):
        return exported.load_encoder(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        from ssl_jax import export
        from ssl_jax.evaluation import pretrained

        variables, metadata, _ = export.encoder_of(pretrained.load(path, step))
        return exported.Encoder(exported.build_module(metadata), variables, metadata)
    raise FinetuneError(
        f"encoder={path!r} holds neither {exported.METADATA_FILE} (python -m ssl_jax.export) nor "
        "config.json (a pretraining workdir)."
    )


class LinearHead(nn.Module):
    """Zero-initialised softmax classifier on [B, F] features (the same start for every run)."""

    num_classes: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(features)


def _loss(params, batch_stats, inputs, labels, rng, *, encoder, head, train_encoder):
    if train_encoder:
        variables = {"params": params["encoder"], "batch_stats": batch_stats}
        features, updates = encoder.apply(
            variables, inputs, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        batch_stats = updates.get("batch_stats", batch_stats)
    else:
        features = inputs  # frozen: features computed once, outside the step
    logits = head.apply({"params": params["head"]}, features.astype(jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, batch_stats


def _train_step(state, inputs, labels, rng, *, encoder, head, optimizer, train_encoder):
    params, opt_state, batch_stats, step = state
    grad_fn = jax.value_and_grad(_loss, has_aux=True)
    (loss, batch_stats), grads = grad_fn(
        params, batch_stats, inputs, labels, jax.random.fold_in(rng, step),
        encoder=encoder, head=head, train_encoder=train_encoder,
    )  # fmt: skip
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, batch_stats, step + 1), loss


def make_optimizer(config: ml_collections.ConfigDict, batch_size: int):
    learning_rate = config.learning_rate * batch_size / 256
    schedule = optax.cosine_decay_schedule(learning_rate, config.steps)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum, nesterov=True),
    )


def _batches(count: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """[steps, batch_size] example indices: seeded epochs of the labelled examples."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // count)
    order = np.concatenate([rng.permutation(count) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def _in_chunks(fn, arrays: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(arrays[i : i + chunk])) for i in range(0, len(arrays), chunk)]
    )


def transfer(
    encoder: exported.Encoder,
    variables: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    config: ml_collections.ConfigDict,
    *,
    mode: str,
    step_fns: dict | None = None,
) -> tuple[float, dict[str, Any]]:
    """Trains a linear head (and, end to end, the encoder) on ``train``; top-1 on ``test``.

    Args:
      encoder: the architecture (its ``variables`` attribute is not used).
      variables: the encoder's starting ``{"params", "batch_stats"}``.
      train, test: (uint8 images [N, H, W, C], int labels [N]).
      num_classes: head outputs.
      config: configs/finetune.py's fields.
      mode: "frozen" or "end_to_end".
      step_fns: a dict shared between calls, so runs of the same shapes compile their step once.

    Returns:
      (top-1 accuracy, the encoder's variables after training).
    """
    images, labels = train
    batch_size = min(config.batch_size, len(images))
    head = LinearHead(num_classes)
    optimizer = make_optimizer(config, batch_size)
    frozen = mode == "frozen"
    chunk = config.eval_batch_size
    features_fn = jax.jit(lambda v, x: encoder.apply(v, x))
    if frozen:
        # Standardised once with the labelled statistics: a fixed affine map, so still linear.
        features = _in_chunks(functools.partial(features_fn, variables), images, chunk)
        mean, scale = features.mean(0), features.std(0) + 1e-6
        inputs = (features - mean) / scale
    else:
        inputs, mean, scale = images, 0.0, 1.0
    feature_dim = encoder.metadata["feature_dim"]
    params = {
        "encoder": variables["params"],
        "head": head.init(jax.random.PRNGKey(0), jnp.zeros((1, feature_dim)))["params"],
    }
    trained = params if not frozen else {"head": params["head"]}
    state = (trained, optimizer.init(trained), variables["batch_stats"], jnp.int32(0))
    key = (mode, id(encoder.module), num_classes, batch_size, config.steps)
    step_fns = {} if step_fns is None else step_fns
    if key not in step_fns:
        step_fns[key] = jax.jit(functools.partial(
            _train_step, encoder=encoder, head=head, optimizer=optimizer,
            train_encoder=not frozen,
        ))  # fmt: skip
    rng = jax.random.PRNGKey(config.seed)
    loss = None
    for indices in _batches(len(images), batch_size, config.steps, config.seed):
        state, loss = step_fns[key](state, inputs[indices], labels[indices], rng)
    if loss is not None and not np.isfinite(float(loss)):
        raise FloatingPointError(f"{mode}: the loss is {float(loss)}; lower learning_rate.")
    trained, _, batch_stats, _ = state
    final = variables if frozen else {"params": trained["encoder"], "batch_stats": batch_stats}
    head_params = trained["head"]

    @jax.jit
    def predict(x):
        features = (encoder.apply(final, x) - mean) / scale
        return jnp.argmax(head.apply({"params": head_params}, features), -1)

    predictions = _in_chunks(predict, test[0], chunk)
    return float(np.mean(predictions == test[1])), jax.device_get(final)


def scratch_variables(encoder: exported.Encoder, seed: int) -> dict[str, Any]:
    """The encoder's architecture at its initialisation for ``seed``."""
    metadata = encoder.metadata
    size, channels = metadata["input"]["image_size"], metadata["input"]["channels"]
    sample = jnp.zeros((1, size, size, channels), jnp.float32)
    variables = jax.jit(lambda rng: encoder.module.init(rng, sample, train=False))(
        jax.random.PRNGKey(seed)
    )
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Loads the encoder and dataset, checks they fit, fine-tunes, compares with scratch."""
    from ssl_jax.vision import data as image_data

    validate_config(config)
    encoder = load_any_encoder(config.encoder, config.step)
    if encoder.metadata["kind"] != "image":
        raise FinetuneError(f"encoder={config.encoder!r} is a BERT; fine-tuning takes images.")
    try:
        dataset = image_data.describe(config.dataset, None, config.data_dir)
    except ValueError as error:
        raise FinetuneError(str(error)) from None
    want = (encoder.metadata["input"]["image_size"], encoder.metadata["input"]["channels"])
    if (dataset.image_size, dataset.channels) != want:
        raise FinetuneError(
            f"dataset={config.dataset!r} has {dataset.image_size}x{dataset.image_size}x"
            f"{dataset.channels} images, the encoder takes {want[0]}x{want[0]}x{want[1]}: "
            "choose a dataset of that shape."
        )
    start = time.time()
    train_images, train_labels = image_data.load_split(
        dataset, dataset.memory_split, data_dir=config.data_dir
    )
    test = image_data.load_split(
        dataset, dataset.test_split, max_examples=config.max_test_examples,
        data_dir=config.data_dir,
    )  # fmt: skip
    subset = balanced_subset(train_labels, config.label_fraction, dataset.num_classes, config.seed)
    train = (train_images[subset], train_labels[subset].astype(np.int32))
    logging.info("data read in %.1f s: %d labelled, %d test", time.time() - start, len(subset),
                 len(test[0]))  # fmt: skip
    step_fns: dict = {}
    results = {
        "encoder": config.encoder, "dataset": config.dataset, "mode": config.mode,
        "label_fraction": config.label_fraction, "labelled_examples": len(subset),
        "test_examples": len(test[0]), "steps": config.steps,
    }  # fmt: skip
    start = time.time()
    results["pretrained_top1"], _ = transfer(
        encoder, encoder.variables, train, test, dataset.num_classes, config,
        mode=config.mode, step_fns=step_fns,
    )  # fmt: skip
    results["pretrained_seconds"] = round(time.time() - start, 1)
    if config.compare_scratch:
        start = time.time()
        results["scratch_top1"], _ = transfer(
            encoder, scratch_variables(encoder, config.seed), train, test,
            dataset.num_classes, config, mode="end_to_end", step_fns=step_fns,
        )  # fmt: skip
        results["scratch_seconds"] = round(time.time() - start, 1)
    if config.output:
        os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
        with open(config.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Config file (configs/finetune.py).")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        results = run(FLAGS.config)
    except (FinetuneError, FileNotFoundError, exported.ShapeMismatchError,
            FloatingPointError) as error:  # fmt: skip
        sys.exit(f"error: {error}")
    print("done: " + json.dumps(results), flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
