"""The Kaggle notebook runs top to bottom in its tiny mode (offline, CPU), as CI executes it."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "kaggle_vlm_sft.ipynb"


@pytest.mark.slow
def test_notebook_runs_in_tiny_mode(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert "TINY = True" in notebook.cells[1].source  # CI runs what users get in tiny mode
    monkeypatch.chdir(tmp_path)  # outputs/ lands in the temporary folder
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "exact_match: base" in outputs
    for name in ("adapter", "merged", "metrics.jsonl", "loss_curve.png", "summary.json"):
        assert f"{name:>16}: ok" in outputs, name
    assert any(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )  # the gallery figure was drawn
