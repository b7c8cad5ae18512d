"""The report's pictures of an image run: kNN accuracy, an embedding map, augmented views, and
for masked-image runs (MAE) reconstructions."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import jax
import numpy as np

from ssl_jax.core import parallel, storage
from ssl_jax.evaluation import features, plots
from ssl_jax.evaluation.run_reader import Missing, RunReader
from ssl_jax.vision import augment
from ssl_jax.vision import data as images

_ENCODE_BATCH = 256  # images per forward pass when embedding the test split


def _knn_accuracy(run: RunReader) -> plots.Figure:
    labels = {
        "knn_top1": "kNN top-1 (test split)",
        "probe_top1": "online linear probe top-1 (training batches)",
    }
    series = {labels[tag]: values for tag, values in run.series(*labels).items()}
    if not series:
        raise Missing("no 'knn_top1' or 'probe_top1' scalars in the event files yet")
    baselines = {}
    path = storage.path(run.workdir, "knn_pixel_baseline.json")
    if path.exists():
        baselines["kNN top-1 on raw pixels"] = json.loads(path.read_text())["knn_top1"]
    panel = plots.Panel("accuracy during pretraining", "top-1 accuracy", series, baselines)
    return plots.line_panels([panel], title=run.title())


def _embeddings(run: RunReader) -> plots.Figure:
    model = run.pretrained
    dataset = model.dataset
    test_images, labels = images.load_split(
        dataset,
        dataset.test_split,
        max_examples=run.max_embedding_examples,
        data_dir=run.config.data_dir,
    )
    mesh = parallel.make_mesh()
    variables = jax.device_put(model.variables, parallel.replicated(mesh))
    embedded, _ = features.extract_features(
        model.method.encode, variables, test_images, labels, mesh,
        batch_size=-(-_ENCODE_BATCH // mesh.size) * mesh.size,
    )  # fmt: skip
    points = plots.project_2d(embedded, method=run.embedding, seed=run.config.seed)
    title = (
        f"{run.title()}: {len(labels)} {dataset.test_split} images, encoder features at step "
        f"{model.step}, {run.embedding.upper()}"
    )
    return plots.embedding_map(points, labels, _class_names(dataset, run.config), title=title)


def _class_names(dataset, config) -> list[str]:
    features = images.builder(dataset.name, config.data_dir).info.features
    label = features["label"] if "label" in features.keys() else None
    names = list(getattr(label, "names", None) or [])
    return (
        names if len(names) == dataset.num_classes else [str(i) for i in range(dataset.num_classes)]
    )


def _augmented_views(run: RunReader) -> plots.Figure:
    dataset = images.describe(run.config.dataset, run.config.image_size, run.config.data_dir)
    originals, _ = images.load_split(
        dataset, dataset.train_split, max_examples=6, data_dir=run.config.data_dir
    )
    rng = jax.random.PRNGKey(run.config.seed)
    settings = augment.multi_crop_settings(run.config, dataset.image_size)
    if "dino" in run.config:
        from ssl_jax.methods import dino

        settings = dino.view_settings(run.config, dataset.image_size)
    if settings is not None:  # multi-crop: the global views, then the local ones
        views = jax.jit(lambda r, x: augment.multi_crop_views(r, x, settings))(rng, originals)
        names = ["global 1", "global 2"] + [f"local {i + 1}" for i in range(len(views) - 2)]
        columns = {
            "image": originals,
            **{n: np.asarray(v) for n, v in zip(names, views, strict=True)},
        }
        figure = plots.image_rows(columns)
        figure.suptitle(f"{run.title()} augmentations", fontsize="medium")
        return figure
    # Jitted: run op by op, the vmapped pipeline dispatches hundreds of small programs.
    views = jax.jit(
        functools.partial(
            augment.simclr_views, **augment.augment_kwargs(run.config, dataset.image_size)
        )
    )
    view1, view2 = views(rng, originals)
    figure = plots.view_pairs(originals, np.asarray(view1), np.asarray(view2))
    figure.suptitle(f"{run.title()} augmentations", fontsize="medium")
    return figure


def reconstruction_columns(originals, masked, predictions, *, patch_size, norm_pix):
    """(masked input, reconstruction) images from a masked forward pass, as MAE shows them.

    Masked patches are grey in the input. The reconstruction pastes the predictions at the
    masked patches beside the visible ones; with ``norm_pix`` each prediction is mapped back
    with its original patch's mean and standard deviation (the loss's own standardisation).
    """
    import jax.numpy as jnp

    from ssl_jax import masking
    from ssl_jax.models.mae import patchify, unpatchify

    channels = originals.shape[-1]
    patches = np.asarray(patchify(jnp.asarray(originals, jnp.float32) / 255.0, patch_size))
    rows = np.arange(len(patches))[:, None]
    masked, predictions = np.asarray(masked), np.asarray(predictions)
    if norm_pix:
        truth = np.asarray(masking.gather_positions(jnp.asarray(patches), masked))
        mean = truth.mean(-1, keepdims=True)
        std = np.sqrt(truth.var(-1, ddof=1, keepdims=True) + 1e-6)
        predictions = predictions * std + mean
    hidden = patches.copy()
    hidden[rows, masked] = 0.5
    pasted = patches.copy()
    pasted[rows, masked] = np.clip(predictions, 0.0, 1.0)
    return (
        np.asarray(unpatchify(hidden, patch_size, channels)),
        np.asarray(unpatchify(pasted, patch_size, channels)),
    )


def _reconstructions(run: RunReader) -> plots.Figure:
    model = run.pretrained
    method = model.method
    if getattr(method, "predict", None) is None or not hasattr(method, "patch_size"):
        raise Missing(f"only masked-image runs reconstruct pixels; this is {run.config.method}")
    dataset = model.dataset
    originals, _ = images.load_split(
        dataset, dataset.test_split, max_examples=6, data_dir=run.config.data_dir
    )
    _, masked, predictions = jax.jit(method.predict)(
        model.variables, originals, jax.random.PRNGKey(run.config.seed)
    )
    hidden, pasted = reconstruction_columns(
        originals, masked, predictions,
        patch_size=method.patch_size, norm_pix=method.norm_pix,
    )  # fmt: skip
    figure = plots.image_rows(
        {"original": originals, "masked input": hidden, "reconstruction": pasted}
    )
    figure.suptitle(f"{run.title()}: step {model.step}", fontsize="medium")
    return figure


PLOTS: dict[str, Callable[[RunReader], plots.Figure]] = {
    "knn_accuracy": _knn_accuracy,
    "embeddings": _embeddings,
    "augmented_views": _augmented_views,
    "reconstructions": _reconstructions,
}
