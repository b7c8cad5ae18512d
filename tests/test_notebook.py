"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel of this venv and learns."""

import os
import re

import nbformat
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
    assert float(accuracies["on raw pixels"]) > 0.6, printed
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 3, "views, loss curve and embedding map should be drawn"
