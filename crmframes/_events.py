"""Events out of the engine, and the one accumulator that turns them into job state.

The engine only emits events; ``JobState.apply`` is the only code that changes a job's
state. ``job.status()``, ``job.report()`` and every display sink read the same state, so
what a widget shows and what the frames say cannot disagree (STYLE 6).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

# partition states, in the order they are reached
PLANNED, SENDING, SUBMITTED, FINISHED, FAILED, REFUSED, IN_DOUBT, NOT_SENT = (
    "planned",
    "sending",
    "submitted",
    "finished",
    "failed",
    "refused",
    "in_doubt",
    "not_sent",
)
SETTLED = frozenset({FINISHED, FAILED, REFUSED, IN_DOUBT, NOT_SENT})


def count(faults: pl.DataFrame | None, outcome: str) -> int:
    """Rows of a partition's verdicts with this outcome (journals before 0.2 hold rejections only)."""
    if faults is None or not faults.height:
        return 0
    if "outcome" not in faults.columns:
        return faults.height if outcome == "rejected" else 0
    return int((faults.get_column("outcome") == outcome).sum())


@dataclass(frozen=True)
class Event:
    job_id: str
    at: float  # time.time() when it happened


@dataclass(frozen=True)
class Planned(Event):
    target: str
    partitions: tuple[tuple[int, int, int], ...]  # (partition, rows, bytes)
    input_rows: int
    invalid_rows: int
    unchanged_rows: int = 0  # left out by skip_unchanged


@dataclass(frozen=True)
class Sending(Event):
    partition: int


@dataclass(frozen=True)
class Submitted(Event):
    partition: int
    import_id: str | None
    vendor_state: str | None
    early: tuple[Any, ...] = ()  # Fault objects already in the submit answer


@dataclass(frozen=True)
class Requeued(Event):
    """A partition goes back to be sent again (refused by a transient error, or in doubt and
    safe to repeat)."""

    partition: int
    why: str


@dataclass(frozen=True)
class Polled(Event):
    partition: int
    vendor_state: str | None
    percent: float | None = None


@dataclass(frozen=True)
class RetryScheduled(Event):
    partition: int | None
    call: str
    why: str
    wait: float  # real seconds
    status: int | None


@dataclass(frozen=True)
class Waiting(Event):
    """A planned wait of a flow, e.g. until the next poll of an import."""

    partition: int
    why: str
    wait: float  # real seconds


@dataclass(frozen=True)
class Settled(Event):
    """A partition reached its end: finished, failed, refused, in_doubt or not_sent."""

    partition: int
    state: str
    vendor_state: str | None = None
    message: str | None = None
    reason: str | None = None  # why a partition was not sent: cancelled | max_reject_rate
    faults: Any = None  # pl.DataFrame (row, outcome, reason, detail): the rows NOT accepted
    unmatched: int = 0  # vendor faults that matched no row sent
    imported: int | None = None
    rejected: int | None = None
    reconciled: bool | None = None  # every row tied to the vendor's answer, and its totals agree


@dataclass(frozen=True)
class Unsettled(Event):
    """Polling stopped at the target's deadline while the import still ran (or stood in a
    word no document lists): the partition stays submitted, and the job resumable."""

    partition: int
    vendor_state: str | None
    message: str


@dataclass(frozen=True)
class Restored(Event):
    """A partition's retry count, read back from the journal by ``cf.resume`` (the journal
    replays everything else as the events that first made it)."""

    partition: int
    retries: int


@dataclass(frozen=True)
class Resumed(Event):
    """A stopped job runs again (e.g. to re-send partitions in doubt)."""


@dataclass(frozen=True)
class Stopped(Event):
    """The job's run ended: ``done`` (every partition settled), ``pending`` (imports still
    running at the vendor when polling reached its deadline), ``paused`` or ``error``."""

    how: str
    message: str | None = None


@dataclass
class PartitionState:
    partition: int
    rows: int
    bytes: int
    state: str = PLANNED
    import_id: str | None = None
    vendor_state: str | None = None
    percent: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    message: str | None = None
    faults: Any = None
    unmatched: int = 0
    imported: int | None = None
    rejected: int | None = None
    reconciled: bool | None = None
    retries: int = 0
    early: tuple[Any, ...] = ()
    reason: str | None = None


@dataclass
class JobState:
    """Everything known about one job, built only from events."""

    job_id: str
    target: str = ""
    input_rows: int = 0
    invalid_rows: int = 0
    unchanged_rows: int = 0
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    retries: int = 0
    waiting: str | None = None  # the current wait, e.g. "rate_limited 1.2 s"
    stopped: str | None = None  # None while running; done | pending | paused | error
    message: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def apply(self, e: Event) -> None:
        with self.lock:
            self._apply(e)

    def _apply(self, e: Event) -> None:
        if isinstance(e, Planned):
            self.target, self.input_rows, self.invalid_rows = e.target, e.input_rows, e.invalid_rows
            self.unchanged_rows = e.unchanged_rows
            for i, rows, size in e.partitions:
                self.partitions.setdefault(i, PartitionState(i, rows, size))
            self.stopped = None
            return
        if isinstance(e, Stopped):
            self.stopped, self.message, self.waiting = e.how, e.message, None
            return
        if isinstance(e, Resumed):
            self.stopped, self.message = None, None
            return
        if isinstance(e, RetryScheduled):
            self.retries += 1
            self.waiting = f"{e.why} {e.wait:.1f} s"
            if e.partition is not None:
                self.partitions[e.partition].retries += 1
            return
        p = self.partitions[e.partition]  # type: ignore[attr-defined]
        if isinstance(e, Waiting):
            self.waiting = f"next {e.why} of partition {e.partition} in {e.wait:.1f} s"
            return
        self.waiting = None
        if isinstance(e, Sending):
            p.state = SENDING
        elif isinstance(e, Submitted):
            p.state, p.import_id, p.vendor_state, p.submitted_at = SUBMITTED, e.import_id, e.vendor_state, e.at
            p.early = e.early
        elif isinstance(e, Requeued):
            p.state, p.message, p.import_id, p.early = PLANNED, e.why, None, ()
        elif isinstance(e, Polled):
            p.vendor_state, p.percent = e.vendor_state, e.percent
        elif isinstance(e, Unsettled):
            p.vendor_state, p.message = e.vendor_state, e.message
        elif isinstance(e, Restored):
            p.retries = e.retries
        elif isinstance(e, Settled):
            p.state, p.message, p.finished_at, p.reason = e.state, e.message, e.at, e.reason
            if p.submitted_at is None and e.state in (FINISHED, FAILED):
                p.submitted_at = e.at  # a synchronous import: submitted and finished in one answer
            p.vendor_state = e.vendor_state or p.vendor_state
            p.faults, p.unmatched, p.imported, p.rejected = e.faults, e.unmatched, e.imported, e.rejected
            p.reconciled = e.reconciled

    def snapshot(self, now: float) -> Progress:
        """Everything a display shows, computed from the state under its lock."""
        with self.lock:
            parts = list(self.partitions.values())
            sent = [p for p in parts if p.state not in (PLANNED, SENDING, NOT_SENT)]
            settled = [p for p in parts if p.state in SETTLED]
            started = min((p.submitted_at for p in parts if p.submitted_at), default=None)
            rejected = sum(count(p.faults, "rejected") for p in parts if p.state == FINISHED)
            rejected += sum(p.rows for p in parts if p.state in (FAILED, REFUSED))
            eta = None
            todo = len(parts) - len(settled)
            if started is not None and settled and todo and self.stopped is None:
                eta = (now - started) / len(settled) * todo
            stages = {
                s: sum(1 for p in parts if p.state == s)
                for s in (PLANNED, SENDING, SUBMITTED, FINISHED, FAILED, REFUSED, IN_DOUBT, NOT_SENT)
            }
            return Progress(
                target=self.target,
                input_rows=self.input_rows,
                invalid_rows=self.invalid_rows,
                unchanged_rows=self.unchanged_rows,
                partitions=len(parts),
                partitions_sent=len(sent),
                partitions_settled=len(settled),
                rows_total=sum(p.rows for p in parts),
                rows_sent=sum(p.rows for p in sent),
                rows_settled=sum(p.rows for p in settled),
                rows_rejected=rejected,
                bytes_total=sum(p.bytes for p in parts),
                bytes_sent=sum(p.bytes for p in sent),
                stages=stages,
                waiting=self.waiting,
                retries=self.retries,
                stopped=self.stopped,
                message=self.message,
                elapsed=None if started is None else now - started,
                eta=eta,
                table=tuple(
                    (p.partition, p.state, p.import_id, p.vendor_state, p.rows, p.retries)
                    for p in sorted(parts, key=lambda p: p.partition)
                ),
            )


@dataclass(frozen=True)
class Progress:
    """A job at one moment, for displays (the widget, tqdm, the job's HTML repr)."""

    target: str
    input_rows: int
    invalid_rows: int
    unchanged_rows: int
    partitions: int
    partitions_sent: int
    partitions_settled: int
    rows_total: int  # valid rows, the ones that are sent
    rows_sent: int
    rows_settled: int
    rows_rejected: int
    bytes_total: int
    bytes_sent: int
    stages: dict[str, int]
    waiting: str | None
    retries: int
    stopped: str | None
    message: str | None
    elapsed: float | None
    eta: float | None
    table: tuple[tuple[Any, ...], ...]  # (partition, state, import_id, vendor_state, rows, retries)


Sink = Callable[[Event], None]
