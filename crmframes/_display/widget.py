"""The notebook panel: an ipywidgets HTML panel redrawn from the job's state, throttled.

Events arrive on the engine's loop thread; the panel is redrawn at most ``MIN_INTERVAL``
apart, and always on the last event, so the final counts are what stays on screen.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from crmframes._display import render
from crmframes._events import Event, Stopped

MIN_INTERVAL = 0.2  # seconds between redraws


class WidgetSink:
    def __init__(self, job: Any) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.job = job
        self.lock = threading.Lock()
        self.last = 0.0
        self.html = widgets.HTML(value=render.panel(job.state.snapshot(time.time())))
        self.rows = widgets.IntProgress(
            min=0, max=max(1, job.plan.valid_rows), description="rows", layout=widgets.Layout(width="640px")
        )
        self.box = widgets.VBox([self.html, self.rows])
        display(self.box)

    def __call__(self, e: Event) -> None:
        how = e.how if isinstance(e, Stopped) else None
        final = how is not None
        now = time.monotonic()
        with self.lock:
            if not final and now - self.last < MIN_INTERVAL:
                return
            self.last = now
        p = self.job.state.snapshot(time.time())
        outcomes = self.job.counts() if how == "done" else None
        self.html.value = render.panel(p, outcomes)
        self.rows.value = p.rows_settled
        self.rows.bar_style = "success" if how == "done" else ("danger" if final else "")
