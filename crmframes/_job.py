"""``Job``: what ``df.crm.submit`` returns — a handle on a running or finished import.

Blocking methods wait on the engine's background loop (``_loop``); each has an async twin.
All state comes from the engine's events through one accumulator (``_events.JobState``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import polars as pl

from crmframes import _engine, _loop, _report
from crmframes._errors import CrmError, CrmWarning
from crmframes._events import NOT_SENT, PLANNED, Event, JobState, Planned, RetryScheduled, Settled, Sink
from crmframes._pipeline import CHUNK_ROWS, Frame, Payload, Plan, payloads, plan
from crmframes._retry import RetryPolicy
from crmframes._target import Target

log = logging.getLogger("crmframes")
FAILED_OUTCOMES = ("rejected", "invalid", "not_sent", "in_doubt")


class Job:
    """One submission of a frame to a target.

    ``status()`` has one row per partition (vendor import), ``report()`` one row per input
    row, ``failed_rows()`` the input rows that did not make it, with the reason.
    ``wait()`` blocks (Ctrl-C pauses; ``wait()`` again resumes), ``await job`` is its twin.
    """

    def __init__(self, frame: Frame, target: Target, *, retry: RetryPolicy | None = None,
                 sinks: Iterable[Sink] = (), chunk_rows: int = CHUNK_ROWS, planned: Plan | None = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.frame = frame
        self.target = target
        self.retry = retry or RetryPolicy()
        self.chunk_rows = chunk_rows
        self.plan = planned if planned is not None else plan(frame, target, chunk_rows=chunk_rows)
        self.state = JobState(self.id)
        self._sinks: list[Sink] = [self.state.apply, *sinks]
        self.context: Any = _engine._UNSET
        self.error: CrmError | None = None
        self.cancelled = False
        self._future: concurrent.futures.Future[None] | None = None
        self._warned = False
        parts = tuple((int(i), int(r), int(b)) for i, r, b in
                      self.plan.partitions.select("partition", "rows", "bytes").iter_rows())
        self.emit(Planned(self.id, time.time(), target.name, parts, self.plan.input_rows, self.plan.invalid_rows))

    # --- engine side ---

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:  # a display must never break a job
                if sink is self.state.apply:
                    raise
                log.exception("crmframes: a progress sink failed on %s", type(event).__name__)

    def payload_iter(self) -> Iterator[Payload]:
        return payloads(self.frame, self.target, chunk_rows=self.chunk_rows)

    def on_retry(self, partition: int | None) -> Callable[[str, str, float, int | None], None]:
        def note(call: str, why: str, wait: float, status: int | None) -> None:
            self.emit(RetryScheduled(self.id, time.time(), partition, call, why, wait, status))
        return note

    # --- running ---

    @property
    def done(self) -> bool:
        """Every partition has settled (accepted, rejected, in doubt or not sent)."""
        return self.state.stopped == "done"

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def _start(self) -> concurrent.futures.Future[None] | None:
        if self.done:
            return None
        if self._future is None or self._future.done():
            self.error = None
            self._future = _loop.start(_engine.run(self))
        return self._future

    def wait(self, timeout: float | None = None) -> Job:
        """Block until every partition settles; starts or resumes the job if needed.

        After ``timeout`` seconds it returns with the job still running (never "failed"):
        call ``wait()`` again. Ctrl-C pauses the job; ``wait()`` resumes it.
        """
        if _loop.on_loop_thread():
            raise RuntimeError("job.wait() was called from crmframes' own engine loop (a sink?); use `await job`")
        fut = self._start()
        if fut is not None:
            try:
                _loop.result(fut, timeout)
            except concurrent.futures.TimeoutError:
                return self
            except KeyboardInterrupt:
                fut.cancel()
                deadline = time.monotonic() + 5
                while self.state.stopped is None and time.monotonic() < deadline:
                    time.sleep(0.01)  # let the run record what it was doing
                raise
        return self._finish()

    async def await_(self, timeout: float | None = None) -> Job:
        """The async twin of ``wait``."""
        fut = self._start()
        if fut is not None:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
            except TimeoutError:
                return self
        return self._finish()

    def __await__(self) -> Any:
        return self.await_().__await__()

    def _finish(self) -> Job:
        if self.error is not None:
            err = self.error
            err.job = self  # so `except cf.VendorError as e: e.job.report()` works
            raise err
        if self.done and not self._warned:
            self._warned = True
            st = self.status()
            bad = st.filter(pl.col("reconciled").not_())
            if bad.height:
                warnings.warn(CrmWarning(
                    f"{self.target.name}: the vendor's totals do not match what was sent for partition(s) "
                    f"{bad['partition'].to_list()} (see job.status(): vendor_imported, vendor_rejected, "
                    "unmatched_faults). Check the target's ids (address book, mailing list, collection)."),
                    stacklevel=3)
        return self

    def cancel(self) -> Job:
        """Send no further partitions; those in flight still finish and are reported."""
        self.cancelled = True
        if not self.running:
            for p in list(self.state.partitions.values()):
                if p.state == PLANNED:
                    self.emit(Settled(self.id, time.time(), p.partition, NOT_SENT, message="cancelled before sending"))
        return self

    # --- results ---

    def status(self) -> pl.DataFrame:
        """One row per partition: import id, state, rows, bytes, times, vendor totals, reconciled."""
        return _report.status(self.state)

    def report(self) -> pl.DataFrame:
        """Exactly one row per input row: ``row, partition, import_id, outcome, reason, detail``."""
        return _report.report(self.state, self.plan.partitions, self.plan.problems,
                              running=self.state.stopped is None)

    def counts(self) -> dict[str, int]:
        """Rows per outcome."""
        vc = self.report().get_column("outcome").value_counts()
        return {str(k): int(v) for k, v in vc.iter_rows()}

    def failed_rows(self, *, with_reason: bool = True) -> pl.DataFrame:
        """The input rows whose outcome is rejected, invalid, not_sent or in_doubt.

        With ``with_reason`` (default) they come with ``row, outcome, reason, detail`` first;
        ``with_reason=False`` gives only the input's columns, ready to fix and resubmit.
        """
        rep = self.report().filter(pl.col("outcome").is_in(FAILED_OUTCOMES))
        lf = self.frame.lazy() if isinstance(self.frame, pl.DataFrame) else self.frame
        picked = (lf.with_row_index("__row").with_columns(pl.col("__row").cast(pl.Int64))
                  .join(rep.lazy().select(pl.col("row").alias("__row"), "outcome", "reason", "detail"),
                        on="__row", how="inner", maintain_order="left")
                  .collect())
        if not with_reason:
            return picked.drop("__row", "outcome", "reason", "detail")
        cols = [c for c in picked.columns if c not in ("__row", "outcome", "reason", "detail")]
        return picked.select(pl.col("__row").alias("row"), "outcome", "reason", "detail", *cols)

    # --- display ---

    def _headline(self) -> str:
        state = self.state.stopped or ("running" if self.running else "not started")
        c = self.state.counts()
        parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        return f"Job {self.id} → {self.target.name}: {state}; partitions: {parts or 'none'}"

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts().items() if v)
        return f"<{self._headline()}; rows: {counts}>"

    def _repr_html_(self) -> str:
        counts = self.counts()
        cells = "".join(f"<td>{html.escape(k)}: <b>{v:,}</b></td>" for k, v in counts.items() if v)
        return (f"<div><b>{html.escape(self._headline())}</b><table><tr>{cells}</tr></table>"
                f"{self.status()._repr_html_()}</div>")


def submit(frame: Frame, target: Target, *, wait: bool = True, timeout: float | None = None,
           retry: RetryPolicy | None = None, sinks: Iterable[Sink] = ()) -> Job:
    """Plan, then send every partition under the vendor's limits; ``wait=False`` returns at once."""
    job = Job(frame, target, retry=retry, sinks=sinks)
    if wait:
        return job.wait(timeout)
    job._start()
    return job


async def asubmit(frame: Frame, target: Target, *, wait: bool = True, timeout: float | None = None,
                  retry: RetryPolicy | None = None, sinks: Iterable[Sink] = ()) -> Job:
    """The async twin of ``submit`` (planning runs in a worker thread, not on your loop)."""
    job = await asyncio.to_thread(Job, frame, target, retry=retry, sinks=sinks)
    if wait:
        return await job.await_(timeout)
    job._start()
    return job
