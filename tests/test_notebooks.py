"""Execute the notebooks in notebooks/ from top to bottom; a cell that raises fails the test.

Each notebook runs in a fresh kernel on a copy (the committed notebooks, with their
outputs, are left as they are), with the notebooks/ directory as its working directory,
so notebook 03 reads the committed bench_results.json. Skipped when the notebook
tooling (nbclient, nbformat, ipykernel) or the notebooks' own needs (matplotlib,
scikit-learn) are not installed: ``pip install ".[test]"`` brings them all.

The same check from the command line: ``pytest --nbmake notebooks/``.
"""
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if "mlp" in path.stem:
        pytest.importorskip("sklearn")

    # A shell (or CI) may export a non-interactive backend; the kernel inherits it.
    # Each notebook asks for inline figures itself, so they must still appear.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()          # raises CellExecutionError, naming the cell, if one fails

    errors = [o for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert images > 0, "the notebook drew no figures"


def test_notebooks_are_committed_with_outputs():
    """The notebooks are meant to be read on GitHub: every code cell that draws or
    prints was executed before committing (the outputs are stored)."""
    nbformat = pytest.importorskip("nbformat")
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name}: not executed in full"
        assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), \
            f"{path.name}: stored without its figures"
