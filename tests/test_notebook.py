"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel of this venv and learns."""

import os
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from test_data import needs_fashion_mnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def numpy_pixel_knn(memory_count, test_count, k=200, temperature=0.1, num_classes=10):
    from ssl_jax.vision import data as images

    dataset = images.describe("fashion_mnist")
    bank, bank_labels = images.load_split(dataset, "train", max_examples=memory_count)
    queries, labels = images.load_split(dataset, "test", max_examples=test_count)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    bank = unit(bank.reshape(len(bank), -1).astype(np.float64))
    queries = unit(queries.reshape(len(queries), -1).astype(np.float64))
    similarity = queries @ bank.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, nearest, 1) / temperature)
    votes = np.zeros((len(queries), num_classes))
    np.add.at(votes, (np.arange(len(queries))[:, None], bank_labels[nearest]), weights)
    return float(np.mean(votes.argmax(1) == labels))


@pytest.mark.slow
@needs_fashion_mnist
def test_notebook_runs_and_prints_knn_accuracies(monkeypatch):
    # A few steps: the test checks that every cell runs, not how well a minute of training does.
    monkeypatch.setenv("SSL_JAX_NOTEBOOK_STEPS", "4")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": REPO}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )
    accuracies = dict(
        re.findall(r"kNN top-1 (at init|after training|on raw pixels): (\S+)", printed)
    )
    assert set(accuracies) == {"at init", "after training", "on raw pixels"}, printed
    for value in accuracies.values():
        assert 0.1 < float(value) <= 1.0, printed  # ten classes: 0.1 is chance
    # The notebook's pixel vote against a NumPy one over the same 5000 / 1000 images: weighted
    # 200-NN on cosine similarity, weights exp(s / 0.1). A broken kNN, labels out of line with
    # their images or other splits show here (printed to 4 digits: 1.5e-3 is a tie at most).
    assert abs(float(accuracies["on raw pixels"]) - numpy_pixel_knn(5000, 1000)) < 1.5e-3, printed
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 3, "views, loss curve and embedding map should be drawn"
