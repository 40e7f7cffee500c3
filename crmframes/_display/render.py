"""Pure renderings of a job's ``Progress``: one text line, and an HTML panel.

The widget, the terminal bars and ``Job._repr_html_`` all draw from these, fed by the
same accumulator as ``job.status()``, so what is shown and what the frames say agree.
"""

from __future__ import annotations

import html

from crmframes._events import (
    FAILED,
    FINISHED,
    IN_DOUBT,
    NOT_SENT,
    PLANNED,
    REFUSED,
    SENDING,
    SUBMITTED,
    Progress,
)

STAGES = (
    (PLANNED, "waiting"),
    (SENDING, "sending"),
    (SUBMITTED, "processing"),
    (FINISHED, "done"),
    (FAILED, "failed"),
    (REFUSED, "refused"),
    (IN_DOUBT, "in doubt"),
    (NOT_SENT, "not sent"),
)
COLOURS = {
    PLANNED: "#9e9e9e",
    SENDING: "#1e88e5",
    SUBMITTED: "#fb8c00",
    FINISHED: "#43a047",
    FAILED: "#e53935",
    REFUSED: "#e53935",
    IN_DOUBT: "#8e24aa",
    NOT_SENT: "#757575",
}
TABLE_ROWS = 12


def _seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.0f} kB"


def headline(p: Progress) -> str:
    state = {
        None: "running",
        "done": "done",
        "paused": "paused",
        "error": "stopped by an error",
        "pending": "stopped polling; imports still running at the vendor",
    }.get(p.stopped, p.stopped)
    return f"{p.target}: {state}"


def summary(p: Progress) -> str:
    """One line: where the job is, what it waits for, and (once done) what became of the rows."""
    stages = ", ".join(f"{label} {p.stages[s]}" for s, label in STAGES if p.stages.get(s))
    parts = [
        headline(p),
        f"partitions {p.partitions_settled}/{p.partitions} settled ({stages or 'none'})",
        f"rows {p.rows_settled:,}/{p.rows_total:,}"
        + (f", {p.invalid_rows:,} invalid" if p.invalid_rows else "")
        + (f", {p.unchanged_rows:,} unchanged (not sent)" if p.unchanged_rows else ""),
        f"sent {_mb(p.bytes_sent)} of {_mb(p.bytes_total)}",
    ]
    if p.rows_rejected:
        parts.append(f"{p.rows_rejected:,} rejected by the vendor")
    if p.retries:
        parts.append(f"{p.retries} retries")
    if p.waiting and p.stopped is None:
        parts.append(f"waiting: {p.waiting}")
    if p.eta is not None:
        parts.append(f"ETA {_seconds(p.eta)}")
    if p.stopped and p.message:
        parts.append(p.message)
    return " · ".join(parts)


def panel(p: Progress, outcomes: dict[str, int] | None = None) -> str:
    """The HTML panel: a stacked bar of partition stages, counts, waits, and a compact table."""
    n = max(p.partitions, 1)
    bar = "".join(
        f"<div title='{label}: {p.stages[s]}' style='width:{100 * p.stages[s] / n:.2f}%;background:{COLOURS[s]}'></div>"
        for s, label in STAGES
        if p.stages.get(s)
    )
    legend = " ".join(
        f"<span style='color:{COLOURS[s]}'>■</span> {label} {p.stages[s]}" for s, label in STAGES if p.stages.get(s)
    )
    facts = [
        (
            "rows sent",
            f"{p.rows_sent:,} of {p.rows_total:,} valid ({p.invalid_rows:,} invalid, not sent"
            + (f"; {p.unchanged_rows:,} unchanged, not sent" if p.unchanged_rows else "")
            + ")",
        ),
        ("bytes sent", f"{_mb(p.bytes_sent)} of {_mb(p.bytes_total)}"),
        ("elapsed / ETA", f"{_seconds(p.elapsed)} / {_seconds(p.eta)}"),
    ]
    if p.waiting and p.stopped is None:
        facts.append(("waiting", p.waiting))
    if p.retries:
        facts.append(("retries", str(p.retries)))
    if outcomes:
        facts.append(("outcomes", ", ".join(f"{k} {v:,}" for k, v in outcomes.items() if v)))
    if p.stopped and p.message:
        facts.append(("note", p.message))
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in facts
    )
    cells = "".join(
        f"<tr><td>{i}</td><td style='color:{COLOURS.get(st, '#000')}'>{html.escape(st)}</td>"
        f"<td>{html.escape(str(vs or ''))}</td><td>{r:,}</td><td>{rt}</td>"
        f"<td style='font-family:monospace'>{html.escape(str(iid or ''))[:36]}</td></tr>"
        for i, st, iid, vs, r, rt in p.table[:TABLE_ROWS]
    )
    hidden = len(p.table) - TABLE_ROWS
    more = f"<div>… and {hidden} more partitions (job.status())</div>" if hidden > 0 else ""
    return (
        f"<div class='crmframes-job' style='font-family:sans-serif;font-size:13px'>"
        f"<b>crmframes · {html.escape(headline(p))}</b>"
        f"<div style='display:flex;height:12px;width:100%;max-width:640px;background:#eee;margin:4px 0'>{bar}</div>"
        f"<div>{legend}</div><table>{rows}</table>"
        f"<details><summary>partitions</summary><table><tr><th>#</th><th>state</th><th>vendor</th><th>rows</th>"
        f"<th>retries</th><th>import id</th></tr>{cells}</table>{more}</details></div>"
    )
