"""The notebooks' code cells run top to bottom (plain exec; nbclient execution comes with the widgets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run_in_order(path, monkeypatch, capsys):
    monkeypatch.chdir(path.parent)
    scope: dict[str, object] = {}
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            exec(compile(source, f"{path.name}", "exec"), scope)
    out = capsys.readouterr().out
    assert "{'accepted': 1}" in out  # the corrected row went through on the second submit
    assert "stored in the sandbox: 197" in out


def test_there_is_a_notebook():
    assert NOTEBOOKS
