"""Display sinks for the engine's events, chosen per job; imported lazily (never by the core's
import): the log sink always, then a notebook panel, terminal bars, or nothing.

    progress=None / True  the panel in a Jupyter kernel, tqdm bars on a terminal, else nothing
    progress="widget" | "tqdm"   that one
    progress=False or CRMFRAMES_PROGRESS=0   nothing (the log lines stay)
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from crmframes._errors import ConfigError
from crmframes._events import Sink


def in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None and hasattr(ip, "get_ipython") else None  # type: ignore[attr-defined]
    return shell is not None and hasattr(shell, "kernel")


def sinks(progress: bool | str | None, job: Any) -> list[Sink]:
    if progress is False or os.environ.get("CRMFRAMES_PROGRESS", "").strip() in ("0", "false", "no"):
        return []
    kind = progress if isinstance(progress, str) else None
    if kind is None:
        kind = "widget" if in_notebook() else ("tqdm" if sys.stderr.isatty() else None)
    if kind == "widget":
        try:
            from crmframes._display.widget import WidgetSink

            return [WidgetSink(job)]
        except ImportError:
            warnings.warn(
                "ipywidgets is not installed (pip install 'crmframes[notebook]'); showing tqdm bars instead",
                stacklevel=4,
            )
            kind = "tqdm"
    if kind == "tqdm":
        from crmframes._display.terminal import TqdmSink

        return [TqdmSink(job)]
    if kind is not None:
        raise ConfigError(f"progress must be True, False, None, 'widget' or 'tqdm'; got {progress!r}")
    return []
