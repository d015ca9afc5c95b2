"""Notebooks: committed with the outputs of a full run (checked fast), and executed at the quick
size through nbclient (slow; skipped without the ``notebooks`` extra)."""

from __future__ import annotations

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_one_notebook_per_experiment():
    import manifold_scores as ms

    names = {p.name.split("_")[0] for p in NOTEBOOKS}
    expected = {k.lower() for k in ms.experiments.REGISTRY if k != "core"}
    assert expected <= names, f"no notebook for {sorted(expected - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_a_figure_and_no_machine_paths(path):
    nb = json.loads(path.read_text())
    text = path.read_text()
    for marker in ("/work/", "/home/", "/root/", "/tmp/"):
        assert marker not in text, f"{path.name} output contains a machine path ({marker})"
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure"
    assert all(o.get("output_type") != "error" for o in outputs), f"{path.name}: an error"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_at_quick_size(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the notebooks extra")
    pytest.importorskip("matplotlib", reason="needs the notebooks extra")
    if path.name.startswith("r"):  # the real-data studies
        pytest.importorskip("sklearn", reason="needs the data extra")
    monkeypatch.setenv("MS_NOTEBOOK_SIZE", "quick")
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("output_type") == "stream")
    assert "size=quick" in text, "the notebook did not pick up MS_NOTEBOOK_SIZE=quick"
