"""A job as its run sees it (``Driver``), and what happens before a new job exists (``prepare``)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import polars as pl

from crmframes import _account, _baseline, _engine, _journal
from crmframes._errors import CrmError, FrameError
from crmframes._events import (
    FAILED,
    FINISHED,
    PLANNED,
    REFUSED,
    Event,
    RetryScheduled,
    Settled,
    Sink,
    Stopped,
    count,
)
from crmframes._options import Options
from crmframes._pipeline import Frame, Payload, Survey, bind, body_hash, payloads, require_usable, survey
from crmframes._target import Target

if TYPE_CHECKING:
    from crmframes._job import Job

log = logging.getLogger("crmframes")


def now() -> float:
    """The engine's clock: injected in tests (``_engine.Engine(clock=...)``)."""
    return _engine.engine().clock.time()


def prepare(frame: Frame, target: Target, opts: Options, parent: tuple[str, pl.Series] | None) -> tuple[str, Survey]:
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
            self.emit(RetryScheduled(self.id, now(), partition, call, why, wait, status))

        return note


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
