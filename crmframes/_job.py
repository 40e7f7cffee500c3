"""``Job``: what ``df.crm.submit`` returns — a handle on a running or finished import.

Blocking methods wait on the engine's background loop (``_loop``); each has an async twin.
All state comes from the engine's events through one accumulator (``_events.JobState``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import json
import logging
import time
import warnings
from collections.abc import Iterable
from typing import Any, Unpack

import polars as pl

from crmframes import _baseline, _journal, _loop, _report, _run
from crmframes._driver import Driver, now, prepare
from crmframes._errors import ConfigError, CrmError, CrmWarning, FrameError, UsageError
from crmframes._events import (
    FAILED,
    IN_DOUBT,
    NOT_SENT,
    PLANNED,
    SETTLED,
    JobState,
    Planned,
    Resumed,
    Settled,
    Sink,
    Stopped,
)
from crmframes._options import Options, SubmitOptions, check_options
from crmframes._pipeline import (
    UNCHANGED_SCHEMA,
    Frame,
    Plan,
)
from crmframes._retry import RetryPolicy
from crmframes._target import Target, target_class

log = logging.getLogger("crmframes")
FAILED_OUTCOMES = ("rejected", "invalid", "not_sent", "in_doubt")


class Job:
    """One submission of a frame to a target.

    ``status()`` has one row per partition (vendor import), ``report()`` one row per input
    row, ``failed_rows()`` the input rows that did not make it, with the reason.
    ``wait()`` blocks (Ctrl-C pauses; ``wait()`` again resumes), ``await job`` is its twin.
    """

    def __init__(
        self,
        frame: Frame | None,
        target: Target,
        *,
        parent: tuple[str, pl.Series] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> None:
        """Check, plan and journal a new job (nothing is sent until ``wait()``); ``parent``: the
        job a ``retry_failed()`` job retries and, per row of this one, the parent's row number."""
        opts = Options.of(options)
        if frame is None:
            raise FrameError("a new job needs the frame to send; cf.resume(job_id) finishes a journalled one")
        job_id, found = prepare(frame, target, opts, parent)
        self._assemble(frame, target, opts, job_id, found.plan, found.hashes, found.lineage, parent)
        self._driver.emit(self._planned())
        self._show()

    def _assemble(
        self,
        frame: Frame | None,
        target: Target,
        options: Options,
        job_id: str,
        plan: Plan,
        hashes: list[str],
        lineage: pl.DataFrame,
        parent: tuple[str, pl.Series] | None,
    ) -> None:
        """The job's parts, from a new plan or the journal."""
        self.id = job_id
        self.frame = frame
        self.target = target
        self.options = options
        self.plan = plan
        self.hashes = hashes
        self.parent: str | None = None if parent is None else parent[0]
        self.parent_rows: pl.Series | None = None if parent is None else parent[1]
        self.resend_in_doubt = False
        self.context: Any = _run.UNSET  # the target has not prepared the job yet
        self.error: CrmError | None = None
        self.cancelled = False
        self._future: concurrent.futures.Future[None] | None = None
        self._warned = False
        self._keys = lineage.select("row", "key")  # every row's key at submit: re-reads are checked against it
        self.state = JobState(self.id)
        self._driver = Driver(self, lineage)

    def _planned(self) -> Planned:
        parts = tuple(
            (int(i), int(r), int(b))
            for i, r, b in self.plan.partitions.select("partition", "rows", "bytes").iter_rows()
        )
        p = self.plan
        return Planned(self.id, now(), self.target.name, parts, p.input_rows, p.invalid_rows, p.unchanged_rows)

    def _show(self) -> None:
        from crmframes._display import sinks as display_sinks  # the widget / tqdm stacks load only here

        self._driver.sinks += display_sinks(self.options.progress, self)

    @classmethod
    def restore(
        cls,
        job_id: str,
        frame: Frame | None = None,
        *,
        connection: Any = None,
        retry: RetryPolicy | None = None,
        sinks: Iterable[Sink] = (),
        progress: bool | str | None = None,
    ) -> Job:
        """Rebuild a journalled job (after a crash or a kernel restart); see ``cf.resume``."""
        jr = _journal.journal()
        saved = jr.saved(job_id)
        if saved is None:
            known = jr.jobs()["job_id"].tail(5).to_list()
            raise ConfigError(f"no job {job_id!r} in the journal at {jr.root}; recent jobs: {known} (cf.jobs())")
        opts = Options.of(
            {
                "retry": retry,
                "sinks": sinks,
                "progress": progress,
                "max_reject_rate": saved.policy.get("max_reject_rate"),
            }
        )
        target = _rebuild_target(saved.row, connection)
        row = saved.row
        plan = Plan(
            target,
            saved.partitions,
            saved.problems,
            row["input_rows"],
            row["invalid_rows"],
            unchanged=saved.unchanged if saved.unchanged is not None else pl.DataFrame(schema=UNCHANGED_SCHEMA),
        )
        parent = None if row["parent"] is None or saved.parent_rows is None else (row["parent"], saved.parent_rows)
        job = cls.__new__(cls)
        job._assemble(frame, target, opts, job_id, plan, saved.hashes, saved.lineage, parent)
        job.state.apply(job._planned())  # already in the journal
        if saved.context is not None:
            job.context = saved.context
        for event in jr.replay(job_id, saved.parts, now()):
            job.state.apply(event)
        job._show()
        return job

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
            self._future = _loop.start(_run.run(self._driver))
        return self._future

    def wait(self, timeout: float | None = None) -> Job:
        """Block until every partition settles; starts or resumes the job if needed.

        After ``timeout`` seconds it returns with the job still running (never "failed"):
        call ``wait()`` again. Ctrl-C pauses the job; ``wait()`` resumes it.
        """
        if _loop.on_loop_thread():
            raise UsageError("job.wait() was called from crmframes' own engine loop (a sink?); use `await job`")
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
                doubt = int(bad["in_doubt_rows"].sum() or 0)
                outcome = (
                    f"{doubt:,} row(s) it does not confirm are in_doubt, never accepted"
                    if doubt
                    else "its per-row answers still tie every row to an outcome"
                )
                warnings.warn(
                    CrmWarning(
                        f"{self.target.name}: the vendor's answer does not reconcile with what was sent in partition(s) "
                        f"{bad['partition'].to_list()}: {outcome} (see job.status(): vendor_imported, vendor_rejected, "
                        "in_doubt_rows, unmatched_faults). Check the target's ids (address book, mailing list, "
                        "collection)."
                    ),
                    stacklevel=3,
                )
        return self

    def cancel(self) -> Job:
        """Send no further partitions; those in flight still finish and are reported."""
        self.cancelled = True
        if not self.running:
            for p in list(self.state.partitions.values()):
                if p.state == PLANNED:
                    self._driver.emit(
                        Settled(
                            self.id,
                            now(),
                            p.partition,
                            NOT_SENT,
                            message="cancelled before sending",
                            reason="cancelled",
                        )
                    )
            if all(p.state in SETTLED for p in self.state.partitions.values()):
                self._driver.emit(Stopped(self.id, now(), "done"))
        return self

    def resend(self, *, wait: bool = True) -> Job:
        """Send again the partitions in doubt, also where a repeat may duplicate data
        (Qualtrics transactions): only after checking in the vendor's UI that they are missing."""
        self.resend_in_doubt = True
        with self.state.lock:
            doubtful = [p.partition for p in self.state.partitions.values() if p.state == IN_DOUBT]
        if doubtful and self.done:
            self._driver.emit(Resumed(self.id, now()))
        return self.wait() if wait else self

    def retry_failed(self, *, wait: bool = True) -> Job | None:
        """A new job with the rows whose failure may be transient: not sent, queued, in doubt
        (where a repeat is safe), or in an import the vendor failed with a word after which a
        repeat may work. Row-level vendor faults (an unknown contact, a suppressed address) are
        not retried: fix those rows first.

        The new job records this one as its parent and keeps this job's row numbers in its
        report (``parent_row``). Returns None, with a warning, when no row may succeed on a
        retry (nothing is journalled)."""
        rep = self.report()
        with self.state.lock:
            failed = [
                p.partition
                for p in self.state.partitions.values()
                if p.state == FAILED and str(p.vendor_state or "").casefold() in self.target.retry_words
            ]
        transient = pl.col("outcome").is_in(["not_sent", "queued"]) | (
            (pl.col("outcome") == "rejected") & pl.col("partition").is_in(failed)
        )
        if self.target.resend_safe:
            transient |= pl.col("outcome") == "in_doubt"
        rows = rep.filter(transient).get_column("row")
        if rows.is_empty():
            warnings.warn(
                CrmWarning(
                    f"job {self.id}: no row failed in a way a repeat may fix (see job.failed_rows()); "
                    "nothing was retried"
                ),
                stacklevel=2,
            )
            return None
        picked = self._pick(rows).drop("__row")
        parent_rows = rows if self.parent_rows is None else self.parent_rows.gather(rows)
        return submit(
            picked,
            self.target,
            wait=wait,
            retry=self.options.retry,
            max_reject_rate=self.options.max_reject_rate,
            progress=self.options.progress,
            parent=(self.parent or self.id, parent_rows),
        )

    def _pick(self, rows: pl.Series) -> pl.DataFrame:
        """The input rows numbered ``rows``, re-read from the job's frame (``__row`` first), after
        checking each one's key against the key journalled at submit: a source that was
        rewritten (another order, other rows) is refused, never read by position."""
        if self.frame is None:
            raise FrameError(f"this resumed job has no frame: cf.resume({self.id!r}, frame) to read its input rows")
        lf = self.frame.lazy() if isinstance(self.frame, pl.DataFrame) else self.frame
        picked = (
            lf.with_row_index("__row")
            .with_columns(pl.col("__row").cast(pl.Int64))
            .join(pl.LazyFrame({"__row": rows.cast(pl.Int64)}), on="__row", how="semi", maintain_order="left")
            .collect()
        )
        if picked.height != rows.n_unique():
            raise FrameError(
                f"the frame of job {self.id} changed: it no longer has all of rows {rows.head(5).to_list()}"
                "…; pass the frame the job was submitted with."
            )
        key = self.target.bind(picked.drop("__row").schema).report_key
        if key is not None and self._keys.get_column("key").null_count() < self._keys.height:
            now = picked.select(pl.col("__row").alias("row"), key.cast(pl.String).alias("now"))
            cmp = now.join(self._keys, on="row", how="left")
            changed = cmp.filter(~pl.col("now").eq_missing(pl.col("key")))
            if changed.height:
                row, got, was = changed.row(0)
                raise FrameError(
                    f"the frame changed since job {self.id} was submitted: input row {row} now holds {got!r} where "
                    f"the journal has {was!r} ({changed.height:,} of {rows.len():,} rows differ). Rows are picked by "
                    "number, so a re-read source must be the same file in the same order; pass the frame the job "
                    "was submitted with."
                )
        return picked

    # --- results ---

    def status(self) -> pl.DataFrame:
        """One row per partition: import id, state, rows, bytes, times, vendor totals, reconciled."""
        return _report.status(self.state)

    def report(self) -> pl.DataFrame:
        """Exactly one row per input row: ``row, partition, import_id, outcome, reason, detail``
        (a ``retry_failed()`` job adds ``parent_row``, the row's number in the first job)."""
        rep = _report.report(
            self.state,
            self.plan.partitions,
            self.plan.problems,
            running=self.state.stopped is None,
            unchanged=self.plan.unchanged,
        )
        if self.parent_rows is not None:
            rep = rep.with_columns(parent_row=self.parent_rows.cast(pl.Int64))
        return rep

    def counts(self) -> dict[str, int]:
        """Rows per outcome."""
        vc = self.report().get_column("outcome").value_counts()
        return {str(k): int(v) for k, v in vc.iter_rows()}

    def failed_rows(self, *, with_reason: bool = True) -> pl.DataFrame:
        """The input rows whose outcome is rejected, invalid, not_sent or in_doubt.

        With ``with_reason`` (default) they come with ``row, outcome, reason, detail`` first;
        ``with_reason=False`` gives only the input's columns, ready to fix and resubmit. A
        re-read source (a LazyFrame over a file) is checked against the keys journalled at
        submit, and refused when it changed."""
        rep = self.report().filter(pl.col("outcome").is_in(FAILED_OUTCOMES))
        picked = self._pick(rep.get_column("row")).join(
            rep.select(pl.col("row").alias("__row"), "outcome", "reason", "detail"),
            on="__row",
            how="inner",
            maintain_order="left",
        )
        if not with_reason:
            return picked.drop("__row", "outcome", "reason", "detail")
        cols = [c for c in picked.columns if c not in ("__row", "outcome", "reason", "detail")]
        return picked.select(pl.col("__row").alias("row"), "outcome", "reason", "detail", *cols)

    # --- display ---

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts().items() if v)
        from crmframes._display import render

        return f"<Job {self.id} · {render.summary(self.state.snapshot(now()))} · rows: {counts}>"

    def _repr_html_(self) -> str:
        from crmframes._display import render

        return render.panel(self.state.snapshot(now()), self.counts())


def submit(
    frame: Frame,
    target: Target,
    *,
    wait: bool = True,
    timeout: float | None = None,
    parent: tuple[str, pl.Series] | None = None,
    **options: Unpack[SubmitOptions],
) -> Job:
    """Plan, then send every partition under the vendor's limits; ``wait=False`` returns at once.

    ``retry``: a ``cf.RetryPolicy`` for every call. ``sinks``: callables that receive each event.
    ``max_reject_rate``: stop sending once the vendor rejects more than this share of the rows
    sent (the rest become ``not_sent``; the first partition goes alone, as a canary).
    ``progress``: None picks the notebook panel or terminal bars; False shows nothing.
    ``check_account``: ask the account first and refuse what it cannot take (DESIGN §6).
    ``skip_unchanged``: send only rows new or changed since the vendor last accepted them for
    this destination (DESIGN §10); the others read ``unchanged``."""
    check_options(wait=wait, timeout=timeout)
    job = Job(frame, target, parent=parent, **options)
    if wait:
        return job.wait(timeout)
    job._start()
    return job


async def asubmit(
    frame: Frame,
    target: Target,
    *,
    wait: bool = True,
    timeout: float | None = None,
    **options: Unpack[SubmitOptions],
) -> Job:
    """The async twin of ``submit`` (planning and the account check run in a worker thread)."""
    check_options(wait=wait, timeout=timeout)
    job = await asyncio.to_thread(functools.partial(Job, frame, target, **options))
    if wait:
        return await job.await_(timeout)
    job._start()
    return job


def jobs(*, prune_older_than: str | float | dt.datetime | dt.date | None = None) -> pl.DataFrame:
    """Every journalled job (in ``$CRMFRAMES_HOME``, default ``~/.crmframes``), oldest first:
    its partitions counted by how they ended (finished, failed, refused, in_doubt, not_sent)
    or where they are (in_flight, queued), and the job a retry came from (``parent``).

    ``prune_older_than`` first removes the jobs last updated before then, with their lineage
    and faults: an age such as ``"30d"``, ``"12h"`` or ``"90m"``, seconds, or a date/datetime."""
    jr = _journal.journal()
    if prune_older_than is not None:
        jr.prune(cutoff(prune_older_than))
    return jr.jobs()


def baseline(target: Target, *, reset: bool = False) -> pl.DataFrame:
    """What the vendor is known to hold for ``target``'s destination (DESIGN §10): one row per
    key it confirmed accepted — ``key_hash``, ``row_hash``, the ``job_id`` that wrote it and
    ``written_at``. ``reset=True`` forgets it first (the next ``skip_unchanged`` run sends all)."""
    if not isinstance(target, Target):
        raise ConfigError(f"baseline takes a target such as cf.Dotdigital().contacts(...); got {type(target).__name__}")
    if reset:
        _baseline.reset(target)
    return _baseline.frame(target)


def cutoff(value: str | float | dt.datetime | dt.date) -> float:
    """Epoch seconds before which a job counts as old: ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``,
    a number of seconds, an ISO date, a date or a datetime (naive ones are UTC)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return now() - float(value)
    if isinstance(value, str) and value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return now() - float(value[:-1]) * units[value[-1]]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    raise ConfigError(
        f"prune_older_than must be an age such as '30d', '12h' or '90m', seconds, or a date; got {value!r}"
    )


def resume(
    job_id: str,
    frame: Frame | None = None,
    *,
    connection: Any = None,
    wait: bool = True,
    timeout: float | None = None,
    resend_in_doubt: bool = False,
    retry: RetryPolicy | None = None,
    sinks: Iterable[Sink] = (),
    progress: bool | str | None = None,
) -> Job:
    """Finish a journalled job after a crash or a kernel restart.

    Imports the vendor already has are polled, never sent again; the frame is needed only
    when some partitions were not sent yet (their content hash must match). Credentials come
    from ``connection=`` or the vendor's environment variables; the journal holds none.
    ``resend_in_doubt=True`` also re-sends partitions whose answer was lost where a repeat
    may duplicate data (Qualtrics transactions).
    """
    job = Job.restore(job_id, frame, connection=connection, retry=retry, sinks=sinks, progress=progress)
    job.resend_in_doubt = resend_in_doubt
    if job.done:
        return job
    job.target.connection.check_credentials()
    if wait:
        return job.wait(timeout)
    job._start()
    return job


def _rebuild_target(row: dict[str, Any], connection: Any) -> Target:
    cls = target_class(row["target"])
    saved = json.loads(row["connection"])
    if connection is None:
        from crmframes._connection import connection_class

        # credentials from the environment
        connection = connection_class(saved["class"])(base_url=saved["base_url"])  # type: ignore[call-arg]
    elif type(connection).__name__ != saved["class"]:
        raise ConfigError(f"job is for {saved['class']}; got a {type(connection).__name__} connection")
    options = json.loads(row["options"])
    limits: dict[str, Any] = options.pop("__limits__", {})
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    target: Target = cls(connection, **fields)  # type: ignore[call-arg]
    return target.with_limits(**limits) if limits else target
