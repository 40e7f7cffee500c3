"""Every notebook runs top to bottom in a real Jupyter kernel (nbclient) against the sandbox,
and its outputs say what an analyst should see: live widgets, outcome counts, fixed rows."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"

EXPECT = {
    "quickstart.ipynb": ["{'accepted': 1}", "stored in the sandbox: 197"],
    "dotdigital.ipynb": [
        "{'accepted': 1} {'accepted': 1}",
        "stored orders: 297",
        "Did you mean 'LASTNAME'?",
        "'LASTNAME': '",
    ],
    "qualtrics.ipynb": ["{'accepted': 1}", "transactions stored: 120"],
    "dengage.ipynb": ["{'accepted': 2}", "contacts stored: 198"],
}


def run(path: Path) -> tuple[str, list[str]]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    texts, widgets = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            data = out.get("data", {})
            texts.append(data.get("text/plain", ""))
            texts.append(data.get("text/html", ""))
            if WIDGET in data:
                widgets.append(data[WIDGET])
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    # the panels' last drawn HTML, as a browser would show it from the saved widget state
    panels = [
        m["state"]["value"]
        for m in state.values()
        if m.get("model_name") == "HTMLModel" and "crmframes-job" in str(m["state"].get("value"))
    ]
    return "\n".join(texts), panels if widgets else []


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_notebook_runs_in_a_kernel_and_shows_what_happened_to_every_row(name):
    text, widgets = run(NOTEBOOKS / name)
    for needle in EXPECT[name]:
        assert needle in text, f"{name}: {needle!r} not in the outputs"
    assert "Traceback" not in text and "Error" not in text.replace("ContactEmailDoesNotExist", "")
    assert widgets, "submit showed a live panel"
    assert all(": done" in w and "accepted" in w for w in widgets), "each panel ends with its final counts"


def test_every_notebook_in_the_folder_is_checked():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(EXPECT)
    for p in NOTEBOOKS.glob("*.ipynb"):
        json.loads(p.read_text())  # valid JSON, committed without outputs
