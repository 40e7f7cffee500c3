"""A real browser shows the notebook widget with its final counts.

An executed notebook is exported to HTML with its widget state (nbconvert), the widget
manager and require.js are served from local copies on loopback (no CDN is reachable),
and headless Chromium renders the page. The test reads the rendered DOM: a crmframes
panel must sit inside a rendered widget (not only in the saved-state JSON) and show the
job done with its outcome counts. The screenshot is kept in $CRMFRAMES_ARTIFACTS
(default build/artifacts/).

Needs Debian's chromium (/usr/bin/chromium) and the npm packages
@jupyter-widgets/html-manager and requirejs under .ci/widget-js: `.ci/run` installs both.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_notebooks import NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent
JS = Path(os.environ.get("CRMFRAMES_WIDGET_JS", ROOT / ".ci" / "widget-js")) / "node_modules"
MANAGER = JS / "@jupyter-widgets" / "html-manager" / "dist"
REQUIRE = JS / "requirejs" / "require.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("CRMFRAMES_ARTIFACTS", ROOT / "build" / "artifacts"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not (MANAGER / "embed-amd.js").exists() or not REQUIRE.exists(),
    reason="the browser check needs Debian's chromium and the widget manager JS: run .ci/run, which installs "
    "them (apt-get install chromium; npm install --prefix .ci/widget-js @jupyter-widgets/html-manager "
    "requirejs)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class RenderedPanels(HTMLParser):
    """Text of each crmframes panel rendered inside a widget (script contents ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.script = 0
        self.widget_depth: list[int] = []
        self.depth = 0
        self.panels: list[str] = []
        self.open: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "input", "meta", "link"):
            return
        self.depth += 1
        cls = dict(attrs).get("class") or ""
        if tag == "script":
            self.script += 1
        if "widget-html-content" in cls:
            self.widget_depth.append(self.depth)
        if "crmframes-job" in cls and self.widget_depth and not self.script:
            self.panels.append("")
            self.open = self.depth

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "img", "input", "meta", "link"):
            return
        if tag == "script":
            self.script -= 1
        if self.open == self.depth:
            self.open = None
        if self.widget_depth and self.widget_depth[-1] == self.depth:
            self.widget_depth.pop()
        self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.open is not None and not self.script:
            self.panels[-1] += data


def test_the_widget_renders_in_chromium_with_its_final_counts(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    path = NOTEBOOKS / "dengage.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    exporter = HTMLExporter(template_name="lab")
    exporter.widget_renderer_url = "embed-amd.js"  # local copies: the default points at a CDN
    exporter.require_js_url = "require.js"
    page, _ = exporter.from_notebook_node(nb)
    site = tmp_path / "site"
    shutil.copytree(MANAGER, site)
    shutil.copy(REQUIRE, site / "require.js")
    (site / "index.html").write_text(page)

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    try:
        flags = [*FLAGS, f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=20000"]
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dengage-notebook-widget.png"
        subprocess.run(
            [CHROMIUM, *flags, "--window-size=1200,2400", f"--screenshot={shot}", url], capture_output=True, timeout=180
        )
    finally:
        server.shutdown()
    parsed = RenderedPanels()
    parsed.feed(dom)
    assert parsed.panels, "no crmframes panel rendered inside a widget"
    first = parsed.panels[0]
    assert "dengage.contacts: done" in first and "accepted 196" in first and "invalid 2" in first
    assert any("accepted 2" in p for p in parsed.panels[1:]), "the resubmitted rows' panel"
    assert shot.exists() and shot.stat().st_size > 10_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
