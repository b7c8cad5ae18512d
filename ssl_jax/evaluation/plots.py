"""Figures of a run from plain arrays: metric curves, embedding maps, augmented views, MLM guesses.

Figures are built on matplotlib's Agg canvas without pyplot, so no global backend is switched and
the same functions serve ``ssl_jax.report`` (PNG and TensorBoard) and notebooks.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# (steps [n], values [n])
Series = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Panel:
    """One axes of ``line_panels``.

    Attributes:
      title: axes title.
      ylabel: y-axis label.
      series: legend label → (steps, values), drawn as lines with markers.
      hlines: legend label → constant, drawn as dashed horizontal lines (baselines).
      log_y: logarithmic y axis (perplexity, learning rates spanning decades).
    """

    title: str
    ylabel: str
    series: Mapping[str, Series]
    hlines: Mapping[str, float] = dataclasses.field(default_factory=dict)
    log_y: bool = False


def line_panels(panels: Sequence[Panel], *, title: str = "") -> Figure:
    """Side-by-side axes of metrics against training steps.

    >>> steps = np.arange(1, 5)
    >>> panel = Panel("loss", "nt_xent", {"loss": (steps, 1.0 / steps)}, hlines={"pixels": 0.3})
    >>> axes = line_panels([panel]).axes[0]
    >>> axes.lines[0].get_ydata().tolist(), list(axes.lines[1].get_ydata())
    ([1.0, 0.5, 0.3333333333333333, 0.25], [0.3, 0.3])
    """
    if not panels:
        raise ValueError("line_panels needs at least one panel.")
    figure = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for label, (steps, values) in panel.series.items():
            # Markers keep sparse series (evaluations every few thousand steps) visible.
            marker = "o" if len(steps) <= 50 else None
            axes.plot(steps, values, marker=marker, markersize=4, label=label)
        for index, (label, value) in enumerate(panel.hlines.items()):
            axes.axhline(value, color=f"C{len(panel.series) + index}", linestyle="--", label=label)
        if panel.log_y:
            axes.set_yscale("log")
        axes.set(title=panel.title, xlabel="step", ylabel=panel.ylabel)
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if len(panel.series) + len(panel.hlines) > 1:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def project_2d(features: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Points [N, 2] of features [N, F], by PCA or t-SNE (scikit-learn).

    t-SNE first reduces to 50 dimensions with PCA, as is usual for wide features.

    >>> points = project_2d([[0, 0, 5], [3, 4, 5], [6, 8, 5], [0, 0, 6]])  # on a plane: exact
    >>> np.round(np.linalg.norm(points[1:] - points[0], axis=1), 4).tolist()
    [5.0, 10.0, 1.0]
    """
    from sklearn.decomposition import PCA  # scikit-learn loads in ~1 s: only when a map is drawn
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) < 3:
        raise ValueError(f"project_2d expects features [N >= 3, F]; got shape {features.shape}.")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    if method == "tsne":
        if features.shape[1] > 50:
            features = PCA(n_components=50, random_state=seed).fit_transform(features)
        perplexity = min(30.0, (len(features) - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(features)
    raise ValueError(f"project_2d method must be 'pca' or 'tsne'; got {method!r}.")


def embedding_map(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, title: str = ""
) -> Figure:
    """Scatter of 2-D points [N, 2] coloured by integer labels [N], one legend entry per class.

    >>> figure = embedding_map(np.zeros((3, 2)), np.array([0, 1, 1]), ["cat", "dog"])
    >>> [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    ['cat', 'dog']
    """
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(
            f"embedding_map expects points [N, 2] and labels [N]; got {points.shape}, "
            f"{labels.shape}."
        )
    figure = Figure(figsize=(7.5, 6.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    palette = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for index, name in enumerate(class_names):
        chosen = labels == index
        if chosen.any():
            axes.scatter(*points[chosen].T, s=6, alpha=0.7, color=palette(index % palette.N),
                         label=name)  # fmt: skip
    axes.set(xticks=[], yticks=[])
    figure.suptitle(title)  # over the legend too: a long title is not cut at the axes' edge
    axes.legend(fontsize="small", markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return figure


def image_rows(columns: dict[str, np.ndarray]) -> Figure:
    """One row per example, one titled column per entry: arrays [N, H, W, C] uint8 or float in
    [0, 1] (sizes may differ between columns).

    >>> white = np.full((2, 8, 8, 1), 255, np.uint8)
    >>> black = np.zeros((2, 4, 4, 1), np.float32)
    >>> figure = image_rows({"image": white, "guess": black})
    >>> [axes.get_title() for axes in figure.axes[:2]], len(figure.axes)
    (['image', 'guess'], 4)
    """
    columns = {name: np.asarray(x) for name, x in columns.items()}
    rows = {len(x) for x in columns.values()}
    if len(rows) != 1 or any(x.ndim != 4 for x in columns.values()):
        raise ValueError(
            "image_rows expects arrays [N, H, W, C] with the same N; got "
            + ", ".join(f"{name} {x.shape}" for name, x in columns.items())
            + "."
        )
    (rows,) = rows
    figure = Figure(figsize=(1.5 * len(columns), 1.5 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, len(columns), squeeze=False)
    for row in range(rows):
        for column, (name, pictures) in enumerate(columns.items()):
            axes = grid[row, column]
            picture = pictures[row].astype(np.float32)
            picture = picture / (255.0 if pictures.dtype == np.uint8 else 1.0)
            if picture.shape[-1] == 1:
                axes.imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                axes.imshow(np.clip(picture, 0.0, 1.0))
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(name, fontsize="small")
    return figure


def view_pairs(images: np.ndarray, view1: np.ndarray, view2: np.ndarray) -> Figure:
    """Rows of (image, view 1, view 2): images [N, H, W, C] uint8 or float, views [N, S, S, C].

    >>> images = np.full((2, 8, 8, 1), 255, np.uint8)
    >>> views = np.zeros((2, 8, 8, 1), np.float32)
    >>> drawn = [axes.images[0].get_array() for axes in view_pairs(images, views, views).axes]
    >>> len(drawn), float(drawn[0].max()), float(drawn[1].max())  # uint8 scaled to [0, 1]
    (6, 1.0, 0.0)
    """
    images, view1, view2 = (np.asarray(x) for x in (images, view1, view2))
    if images.ndim != 4 or view1.shape != view2.shape or len(view1) != len(images):
        raise ValueError(
            f"view_pairs expects images [N, H, W, C] and two views [N, S, S, C]; got "
            f"{images.shape}, {view1.shape}, {view2.shape}."
        )
    return image_rows({"image": images, "view 1": view1, "view 2": view2})


@dataclasses.dataclass(frozen=True)
class MaskedGuess:
    """One masked position of a held-out sequence and the model's best guesses.

    Attributes:
      original: the word piece that was there.
      shown: what the model saw in its place: ``[MASK]``, a random piece, or the original.
      top: the model's most likely pieces with their probabilities, best first.
    """

    original: str
    shown: str
    top: Sequence[tuple[str, float]]


def masked_predictions(
    texts: Sequence[str], guesses: Sequence[Sequence[MaskedGuess]], *, title: str = ""
) -> Figure:
    """Held-out sequences with numbered blanks ``[1]``, ``[2]`` … and the guesses for each.

    Args:
      texts: one string per sequence, blanks written ``[i]`` in order.
      guesses: per sequence, the ``MaskedGuess`` of each blank, in the same order.
      title: first line of the figure.

    >>> guess = MaskedGuess("cat", "[MASK]", [("cat", 0.5), ("dog", 0.25)])
    >>> to_rgb(masked_predictions(["the [1] sat"], [[guess]])).ndim
    3
    """
    if len(texts) != len(guesses) or not texts:
        raise ValueError(f"masked_predictions needs one guess list per text; got "
                         f"{len(texts)} texts and {len(guesses)} guess lists.")  # fmt: skip
    width = 100
    blocks = []
    for number, (text, sequence_guesses) in enumerate(zip(texts, guesses, strict=True), 1):
        lines = [(f"sequence {number}", "black", "bold")]
        lines += [(line, "black", "normal") for line in textwrap.wrap(text, width)]
        for blank, guess in enumerate(sequence_guesses, 1):
            top = "  ".join(f"{piece} {probability:.2g}" for piece, probability in guess.top)
            seen = ""
            if guess.shown == guess.original:
                seen = " (left unchanged)"
            elif guess.shown != "[MASK]":
                seen = f" (replaced by {guess.shown!r})"
            hit = bool(guess.top) and guess.top[0][0] == guess.original
            colour = "tab:green" if hit else "tab:red"
            lines.append((f"  [{blank}] {guess.original!r}{seen}  →  {top}", colour, "normal"))
        blocks.append(lines + [("", "black", "normal")])
    lines = [line for block in blocks for line in block]
    line_height = 0.19  # inches, at 9 pt
    top_margin = 0.8 if title else 0.5
    figure = Figure(figsize=(10.0, line_height * len(lines) + top_margin + 0.1))
    FigureCanvasAgg(figure)
    header = "masked pieces: true piece → top-3 guesses with probabilities (green: top-1 right)"
    heading = f"{title}\n{header}" if title else header
    top = 1.0 - 0.15 / figure.get_figheight()
    figure.text(0.01, top, heading, fontsize=10, va="top", weight="bold")
    for index, (line, colour, weight) in enumerate(lines):
        y = 1.0 - (top_margin + index * line_height) / figure.get_figheight()
        figure.text(0.01, y, line, fontsize=9, family="monospace", color=colour, weight=weight,
                    va="top")  # fmt: skip
    return figure


def to_rgb(figure: Figure) -> np.ndarray:
    """The figure rendered as uint8 RGB [H, W, 3], for ``MetricWriter.write_images``."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(figure: Figure, path: str, *, dpi: int = 100) -> None:
    """Writes the figure to ``path`` as PNG."""
    figure.savefig(path, format="png", dpi=dpi)
