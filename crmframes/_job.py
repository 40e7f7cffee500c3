"""``Job``: what ``df.crm.submit`` returns — a handle on a running or finished import.

Blocking methods wait on the engine's background loop (``_loop``); each has an async twin.
All state comes from the engine's events through one accumulator (``_events.JobState``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, TypedDict, Unpack

import polars as pl

from crmframes import _account, _baseline, _engine, _journal, _loop, _report, _run
from crmframes._errors import ConfigError, CrmError, CrmWarning, FrameError, UsageError, did_you_mean
from crmframes._events import (
    FAILED,
    FINISHED,
    IN_DOUBT,
    NOT_SENT,
    PLANNED,
    REFUSED,
    SETTLED,
    Event,
    JobState,
    Planned,
    Resumed,
    RetryScheduled,
    Settled,
    Sink,
    Stopped,
    count,
)
from crmframes._pipeline import (
    CHUNK_ROWS,
    UNCHANGED_SCHEMA,
    Frame,
    Payload,
    Plan,
    Survey,
    bind,
    body_hash,
    payloads,
    require_usable,
    survey,
)
from crmframes._retry import RetryPolicy
from crmframes._target import Target, target_class

log = logging.getLogger("crmframes")
FAILED_OUTCOMES = ("rejected", "invalid", "not_sent", "in_doubt")


class SubmitOptions(TypedDict, total=False):
    """What ``submit`` takes besides ``wait`` and ``timeout``; ``Options`` carries them as one
    object from the call to the job (``Options.of`` checks each)."""

    retry: RetryPolicy | None
    sinks: Iterable[Sink]
    max_reject_rate: float | None
    progress: bool | str | None
    check_account: bool
    skip_unchanged: bool
    chunk_rows: int


@dataclasses.dataclass(frozen=True)
class Options:
    """A job's options, checked: see ``submit`` for what each does."""

    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    sinks: tuple[Sink, ...] = ()
    max_reject_rate: float | None = None
    progress: bool | str | None = None
    check_account: bool = True
    skip_unchanged: bool = False
    chunk_rows: int = CHUNK_ROWS

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> Options:
        names = [f.name for f in dataclasses.fields(cls)]
        for name in given:
            if name not in names:
                raise ConfigError(
                    f"unknown option {name!r}; submit takes wait, timeout, {', '.join(names)}.{did_you_mean(name, names)}"
                )
        values = dict(given)
        sinks = values.get("sinks", ())
        if isinstance(sinks, Iterable) and not isinstance(sinks, (str, bytes)):
            values["sinks"] = sinks = tuple(sinks)  # a generator is read once: by the check, then kept
        check_options(**values)
        if values.get("retry") is None:
            values.pop("retry", None)
        return cls(**values)


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
        job_id, found = _prepare(frame, target, opts, parent)
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
        return Planned(self.id, _now(), self.target.name, parts, p.input_rows, p.invalid_rows, p.unchanged_rows)

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
        for event in jr.replay(job_id, saved.parts, _now()):
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
                            _now(),
                            p.partition,
                            NOT_SENT,
                            message="cancelled before sending",
                            reason="cancelled",
                        )
                    )
            if all(p.state in SETTLED for p in self.state.partitions.values()):
                self._driver.emit(Stopped(self.id, _now(), "done"))
        return self

    def resend(self, *, wait: bool = True) -> Job:
        """Send again the partitions in doubt, also where a repeat may duplicate data
        (Qualtrics transactions): only after checking in the vendor's UI that they are missing."""
        self.resend_in_doubt = True
        with self.state.lock:
            doubtful = [p.partition for p in self.state.partitions.values() if p.state == IN_DOUBT]
        if doubtful and self.done:
            self._driver.emit(Resumed(self.id, _now()))
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

        return f"<Job {self.id} · {render.summary(self.state.snapshot(_now()))} · rows: {counts}>"

    def _repr_html_(self) -> str:
        from crmframes._display import render

        return render.panel(self.state.snapshot(_now()), self.counts())


def _prepare(frame: Frame, target: Target, opts: Options, parent: tuple[str, pl.Series] | None) -> tuple[str, Survey]:
    """Everything before a new job exists: refuse an unusable frame, missing credentials or an
    account that cannot take it (before anything is journalled), survey the frame, journal it."""
    require_usable(bind(frame, target))  # an unusable frame is refused before any request
    target.connection.check_credentials()  # before anything is journalled
    if opts.check_account:
        _account.require(frame, target, opts.retry)
    found = survey(frame, target, chunk_rows=opts.chunk_rows, skip_unchanged=opts.skip_unchanged)
    job_id = uuid.uuid4().hex[:12]
    _journal.journal().create(
        job_id,
        target,
        found.plan,
        found.hashes,
        found.lineage,
        {"max_reject_rate": opts.max_reject_rate},
        parent=None if parent is None else parent[0],
        parent_rows=None if parent is None else parent[1],
    )
    return job_id, found


class Driver:
    """The job as its run sees it (``_run.Job``): events out to the sinks, the bodies to send,
    the rows each import holds, the stop policy. Kept apart from the user's ``Job``, whose
    methods are all for the user."""

    def __init__(self, job: Job, lineage: pl.DataFrame) -> None:
        from crmframes._display.log import log_event  # display loads with the first job, not on import

        self.job = job
        self.id, self.target, self.state, self.hashes = job.id, job.target, job.state, job.hashes
        self.retry, self.max_reject_rate = job.options.retry, job.options.max_reject_rate
        self.journal = _journal.journal()
        sent = lineage.filter(pl.col("partition").is_not_null())
        self._lineage = {int(k[0]): v for k, v in sent.partition_by("partition", as_dict=True).items()}
        # the rows the survey found unchanged: the job leaves the same ones out when it sends
        self._skip = job.plan.unchanged.get_column("row").sort().to_numpy()
        self.sinks: list[Sink] = [self.state.apply, self.journal.record, self._learn, log_event, *job.options.sinks]

    # what the run sets on the job
    @property
    def context(self) -> Any:
        return self.job.context

    @property
    def error(self) -> CrmError | None:
        return self.job.error

    @error.setter
    def error(self, value: CrmError | None) -> None:
        self.job.error = value

    @property
    def resend_in_doubt(self) -> bool:
        return self.job.resend_in_doubt

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a display must never break a job
                if sink is self.state.apply:
                    raise
                log.exception("crmframes: a progress sink failed on %s", type(event).__name__)

    def _learn(self, e: Event) -> None:
        """The baseline learns each row the vendor confirmed accepted, as its partition settles
        (a crash keeps what was confirmed); the job's end folds the lot into one file."""
        if isinstance(e, Settled) and e.state == FINISHED:
            part = self._lineage.get(e.partition)
            if part is None or "row_hash" not in part.columns or part.get_column("row_hash").null_count():
                return
            refused = e.faults.get_column("row") if e.faults is not None and e.faults.height else None
            ok = part if refused is None else part.filter(~pl.col("row").is_in(refused.implode()))
            _baseline.record(self.target, self.id, ok.get_column("key_hash"), ok.get_column("row_hash"))
        elif isinstance(e, Stopped) and e.how == "done":
            _baseline.compact(self.target)

    def payload_iter(self) -> Generator[tuple[Payload, str], None, None]:
        """Each payload with the hash of its body (checked against the plan's)."""
        frame = self.job.frame
        if frame is None:
            unsent = sorted(p.partition for p in self.state.partitions.values() if p.state == PLANNED)
            raise FrameError(
                f"job {self.id} has {len(unsent)} partition(s) not sent yet ({unsent[:10]}); pass the "
                f"same frame to send them: cf.resume({self.id!r}, frame)"
            )
        bodies = payloads(frame, self.target, chunk_rows=self.job.options.chunk_rows, skip_rows=self._skip)
        return _hashed(bodies)

    def lineage(self, partition: int) -> tuple[pl.Series, pl.Series | None]:
        """The input rows of a partition, and the keys the vendor will echo for them."""
        part = self._lineage[partition]
        keys = part.get_column("key")
        return part.get_column("row"), None if keys.null_count() == len(keys) else keys

    def set_context(self, context: Any) -> None:
        self.job.context = context
        self.journal.set_context(self.id, context)

    def stop_reason(self) -> tuple[str, str] | None:
        """Why no further partition may be sent: cancelled, or the reject rate policy."""
        if self.job.cancelled:
            return "cancelled", "cancelled before sending"
        if self.max_reject_rate is None:
            return None
        sent = rejected = 0
        with self.state.lock:
            for p in self.state.partitions.values():
                if p.state == FINISHED:
                    sent += p.rows
                    rejected += count(p.faults, "rejected")
                elif p.state in (FAILED, REFUSED):
                    sent += p.rows
                    rejected += p.rows
        if sent and rejected / sent > self.max_reject_rate:
            return (
                "max_reject_rate",
                f"not sent: the vendor rejected {rejected:,} of {sent:,} rows sent "
                f"({rejected / sent:.0%}), over max_reject_rate={self.max_reject_rate:.0%}",
            )
        return None

    def on_retry(self, partition: int | None) -> Callable[[str, str, float, int | None], None]:
        def note(call: str, why: str, wait: float, status: int | None) -> None:
            self.emit(RetryScheduled(self.id, _now(), partition, call, why, wait, status))

        return note


def _now() -> float:
    return _engine.engine().clock.time()


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
        return _now() - float(value)
    if isinstance(value, str) and value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return _now() - float(value[:-1]) * units[value[-1]]
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


def check_options(**given: Any) -> None:
    """Every submit option's type and range, checked before anything runs (a ``ConfigError``
    that names the option, what it got and what is allowed)."""
    for name, value in given.items():
        ok, allowed = _OPTION_RULES[name](value)
        if not ok:
            raise ConfigError(f"{name} must be {allowed}; got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_OPTION_RULES: dict[str, Callable[[Any], tuple[bool, str]]] = {
    "max_reject_rate": lambda v: (v is None or (_number(v) and 0 <= v <= 1), "None or a share of rows from 0 to 1"),
    "retry": lambda v: (v is None or isinstance(v, RetryPolicy), "None or a cf.RetryPolicy(...)"),
    "progress": lambda v: (
        v is None or isinstance(v, bool) or v in ("widget", "tqdm"),
        "True, False, None, 'widget' or 'tqdm'",
    ),
    "sinks": lambda v: (
        not isinstance(v, (str, bytes)) and isinstance(v, Iterable) and all(callable(x) for x in v),
        "a list of callables that take an event",
    ),
    "wait": lambda v: (isinstance(v, bool), "True or False"),
    "check_account": lambda v: (isinstance(v, bool), "True or False"),
    "skip_unchanged": lambda v: (isinstance(v, bool), "True or False"),
    "chunk_rows": lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 1, "rows per batch (an int >= 1)"),
    "timeout": lambda v: (v is None or (_number(v) and v >= 0), "None or seconds (a number >= 0)"),
}


def _hashed(bodies: Generator[Payload, None, None]) -> Generator[tuple[Payload, str], None, None]:
    """Each payload with its hash; closing this closes the encoder. No name holds the previous
    body while the next is built (a ``for`` variable would: 50 MB more at the peak)."""
    with contextlib.closing(bodies):
        while True:
            try:
                yield _with_hash(next(bodies))
            except StopIteration:
                return


def _with_hash(p: Payload) -> tuple[Payload, str]:
    return p, body_hash(p.body)
