"""A job's run: the one place that decides what to send, when, and what came of it (DESIGN §4).

``Run`` drives one job on the engine (``_engine``: the HTTP clients, budgets, retries and
waits): resume what the vendor already has, send what is planned under a ``Slot`` of the
account's budget, track each import and classify its outcome into the job's events. It
imports no job module: data flows one way, job → run → engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from crmframes._engine import Budget, Engine, engine, now_utc
from crmframes._errors import (
    AuthenticationError,
    ConfigError,
    CrmError,
    FrameError,
    InDoubt,
    VendorError,
    VendorUnavailableError,
)
from crmframes._events import (
    FAILED,
    FINISHED,
    IN_DOUBT,
    NOT_SENT,
    PLANNED,
    SENDING,
    SUBMITTED,
    Polled,
    Requeued,
    Sending,
    Settled,
    Stopped,
    Submitted,
    Unsettled,
    Waiting,
)
from crmframes._flow import Ended, Outcome, Progress
from crmframes._report import verdicts

if TYPE_CHECKING:
    import polars as pl

    from crmframes._events import JobState
    from crmframes._flow import Request, Submission
    from crmframes._plan import Payload
    from crmframes._retry import RetryPolicy
    from crmframes._target import Target

# seconds an interrupted run still waits for a submit already on the wire
INTERRUPT_GRACE = 10.0


class Job(Protocol):
    """What a run reads and calls of its job (``_job.Driver`` is one), apart from the
    user's ``Job``, which carries none of these."""

    id: str
    target: Target
    state: JobState
    retry: RetryPolicy

    @property
    def context(self) -> Any: ...

    hashes: list[str]

    @property
    def resend_in_doubt(self) -> bool: ...

    max_reject_rate: float | None
    error: CrmError | None

    def emit(self, event: Any) -> None: ...
    def stop_reason(self) -> tuple[str, str] | None: ...
    def set_context(self, context: Any) -> None: ...
    def on_retry(self, partition: int | None) -> Callable[[str, str, float, int | None], None]: ...
    def payload_iter(self) -> Generator[tuple[Payload, str], None, None]: ...
    def lineage(self, partition: int) -> tuple[pl.Series, pl.Series | None]: ...


async def run(job: Job) -> None:
    """Track what the vendor has, send what it does not, until every partition settles."""
    await Run(job, engine()).go()


class Run:
    """One run of a job: resume what was submitted, send what is planned (one ``submit_one``
    per partition, under a slot of the account's budget), ``track_one`` each import, and
    ``classify`` its outcome into the job's events.

    Imports already submitted (a resumed job) are polled, never sent again. Partitions in
    doubt are re-sent only where the endpoint is an upsert by key (or the user asked).
    Cancelling ``go`` (Ctrl-C, the notebook's stop button) leaves the job resumable: a
    submit already on the wire gets a moment to record its import id.
    """

    def __init__(self, job: Job, eng: Engine) -> None:
        self.job = job
        self.eng = eng
        self.target = job.target
        self.session = eng.session(job.target.connection)
        self.budget = eng.budget(job.target)
        # A slot is held until the vendor finishes the import where the vendor counts running
        # imports, else only while submitting. With max_reject_rate it is held until the import's
        # verdict is known, and the first partition goes alone (a canary): the policy judges
        # results before more is sent, whatever the endpoint (measured: benchmarks/README.md).
        self.judged = job.max_reject_rate is not None
        if self.judged:
            self.hold = Slot.UNTIL_SETTLED
        elif job.target.limits.max_concurrent is not None:
            self.hold = Slot.UNTIL_VENDOR_DONE
        else:
            self.hold = Slot.UNTIL_SUBMITTED

    def now(self) -> float:
        return self.eng.clock.time()

    def emit(self, event: Any) -> None:
        self.job.emit(event)

    async def go(self) -> None:
        job = self.job
        try:
            async with asyncio.TaskGroup() as tg:
                await self.resume_submitted(tg)
                await self.send_planned(tg)
        except BaseException as exc:
            for part in list(job.state.partitions.values()):
                if part.state == SENDING:  # cut off mid-send: maybe applied, maybe not
                    self.emit(
                        Settled(
                            job.id,
                            self.now(),
                            part.partition,
                            IN_DOUBT,
                            message="interrupted while sending; resume re-sends it where that is safe",
                        )
                    )
            err = _first_crm_error(exc)
            if err is not None:
                job.error = err
                self.emit(Stopped(job.id, self.now(), "error", str(err)))
                return
            self.emit(Stopped(job.id, self.now(), "paused", "interrupted; job.wait() or cf.resume() goes on"))
            raise
        self.finish()

    async def resume_submitted(self, tg: asyncio.TaskGroup) -> None:
        """Poll the imports the vendor already has; queue partitions in doubt again where safe."""
        job, target = self.job, self.target
        for part in sorted(job.state.partitions.values(), key=lambda p: p.partition):
            if part.state == SUBMITTED:
                slot = Slot(self.budget, self.hold)
                await slot.take()
                tg.create_task(self.partition(part.partition, None, slot))
            elif part.state == IN_DOUBT and (target.resend_safe or job.resend_in_doubt):
                why = "re-sent: its first answer was lost"
                self.emit(
                    Requeued(
                        job.id,
                        self.now(),
                        part.partition,
                        why + ("" if target.resend_safe else " (re-sent because you asked)"),
                    )
                )

    async def send_planned(self, tg: asyncio.TaskGroup) -> None:
        """Encode the planned partitions again, check each is what was planned, and send it."""
        job, target = self.job, self.target
        to_send = {p.partition for p in job.state.partitions.values() if p.state == PLANNED}
        if not to_send or job.stop_reason() is not None:
            return
        if job.context is UNSET:
            flow = target.prepare(now_utc(self.now()))
            ctx = None
            if flow is not None:
                ctx = await self.eng.drive(flow, self.session, job.retry, on_retry=job.on_retry(None))
            job.set_context(ctx)
        canary: asyncio.Task[None] | None = None
        payloads = job.payload_iter()
        try:
            while to_send:
                p = await asyncio.to_thread(next, payloads, None)
                if p is None:
                    break
                payload, digest = p
                if payload.partition not in to_send:
                    continue
                if digest != job.hashes[payload.partition]:
                    raise FrameError(
                        f"partition {payload.partition} of job {job.id} encodes differently than when the job "
                        "was planned: the frame changed. Resume with the same frame, or submit this one as a "
                        "new job."
                    )
                to_send.discard(payload.partition)
                if job.stop_reason() is not None:
                    break
                slot = Slot(self.budget, self.hold)
                await slot.take()
                if job.stop_reason() is not None:
                    slot.free()
                    break
                task = tg.create_task(self.partition(payload.partition, payload, slot))
                del payload, p
                if self.judged and canary is None:
                    canary = task
                    await asyncio.wait({task})  # the canary's verdict decides whether more is sent
        finally:
            # let go of the encoder (its batches and buffers); a thread still inside it
            # (cancelled mid-``next``) finishes on its own and the generator is collected
            with contextlib.suppress(ValueError):
                payloads.close()
        if to_send and job.stop_reason() is None:
            raise FrameError(
                f"the frame changed: it no longer holds partition(s) {sorted(to_send)[:10]} of "
                f"job {job.id}. Resume with the same frame, or submit this one as a new job."
            )

    def finish(self) -> None:
        """After every task: what the user's policy stopped, what still runs, or done."""
        job = self.job
        reason = job.stop_reason()
        if reason is not None:
            why, message = reason
            for part in list(job.state.partitions.values()):
                if part.state == PLANNED:
                    self.emit(Settled(job.id, self.now(), part.partition, NOT_SENT, message=message, reason=why))
        running = [p.partition for p in job.state.partitions.values() if p.state == SUBMITTED]
        if running:
            self.emit(
                Stopped(
                    job.id,
                    self.now(),
                    "pending",
                    f"partition(s) {running[:10]} still running at the vendor after polling up to the target's "
                    "poll_deadline; job.wait() or cf.resume() polls them again",
                )
            )
            return
        self.emit(Stopped(job.id, self.now(), "done"))

    async def partition(self, partition: int, payload: Payload | None, slot: Slot) -> None:
        """Submit (or keep tracking) one partition and settle it; the slot is freed as soon as
        the hold allows, so the next partition starts at once (never in waves)."""
        job = self.job
        part = job.state.partitions[partition]
        with slot:
            try:
                if payload is not None:
                    self.emit(Sending(job.id, self.now(), partition))
                    req = self.target.submit_request(payload.body, payload.content_type, job.context)
                    # the body can be 50 MB: from here only the request holds it, until it is sent
                    # (a Qualtrics request is a copy with its batch id: the planned body goes now)
                    payload = None
                    tracked = await self.submit_one(partition, req, slot)
                    del req  # sent: the import is tracked without its body
                    if not tracked:
                        return  # a synchronous answer was the whole outcome
                await self.track_one(partition, slot)
            except InDoubt as e:
                self.emit(Settled(job.id, self.now(), partition, IN_DOUBT, message=str(e)))
            except ConfigError as e:  # e.g. credentials removed mid-job: refused before the request left
                if part.state == SENDING:
                    self.emit(Requeued(job.id, self.now(), partition, str(e)))
                raise
            except VendorError as e:
                if (
                    e.call == "submit"
                    and not isinstance(e, (AuthenticationError, VendorUnavailableError))
                    and e.status != 404
                ):
                    # the vendor refused this request (e.g. 400 validation, 413): settle it, go on
                    self.emit(Settled(job.id, self.now(), partition, "refused", message=str(e)))
                else:
                    if part.state == SENDING:  # refused before it was applied: send again on resume
                        self.emit(Requeued(job.id, self.now(), partition, str(e)))
                    raise

    async def submit_one(self, partition: int, req: Request, slot: Slot) -> bool:
        """Send one partition's request. True when the vendor took it as an import to track."""
        job, target = self.job, self.target
        retry = job.on_retry(partition)
        send = asyncio.ensure_future(
            self.eng.call(
                self.session,
                req,
                job.retry,
                pace=self.budget,
                on_retry=lambda why, w, st: retry("submit", why, w, st),
            )
        )
        try:
            reply = await asyncio.shield(send)
        except asyncio.CancelledError:
            # Interrupted mid-send: give the answer a moment, so the import id is recorded
            # and a resumed job polls it instead of sending the rows a second time.
            done, _ = await asyncio.wait({send}, timeout=INTERRUPT_GRACE)
            if send in done and not send.cancelled() and send.exception() is None:
                self.submitted(partition, target.accepted(send.result()))
            else:
                send.cancel()
            raise
        tracked = self.submitted(partition, target.accepted(reply))
        if tracked:
            slot.reached(Slot.UNTIL_SUBMITTED)
        return tracked

    def submitted(self, partition: int, sub: Submission) -> bool:
        if sub.outcome is not None:  # a synchronous answer is the whole outcome: one journal write
            self.classify(partition, sub.outcome)
            return False
        self.emit(Submitted(self.job.id, self.now(), partition, sub.import_id, sub.vendor_state, sub.early))
        return True

    async def track_one(self, partition: int, slot: Slot) -> None:
        """Poll the vendor's import and fetch its reports (the target's flow), then classify."""
        job = self.job
        part = job.state.partitions[partition]

        def on_progress(step: Progress | Ended) -> None:
            if isinstance(step, Ended):
                slot.reached(Slot.UNTIL_VENDOR_DONE)
            else:
                self.emit(Polled(job.id, self.now(), partition, step.vendor_state, step.percent))

        def on_pause(why: str, wait: float) -> None:
            self.emit(Waiting(job.id, self.now(), partition, why, wait))

        flow = self.target.track(part.import_id or "", part.early, job.context, part.rows)
        outcome = await self.eng.drive(
            flow,
            self.session,
            job.retry,
            on_progress=on_progress,
            on_pause=on_pause,
            on_retry=job.on_retry(partition),
        )
        self.classify(partition, outcome)

    def classify(self, partition: int, outcome: Outcome) -> None:
        """An import's outcome as the job's event: settled (rows tied to verdicts) or still pending."""
        job = self.job
        if outcome.state == "pending":  # polled up to the deadline: the vendor still has it
            job.emit(Unsettled(job.id, self.now(), partition, outcome.vendor_state, outcome.message or ""))
            return
        totals = outcome.totals
        found = None
        if outcome.state == "finished":
            rows, keys = job.lineage(partition)
            found = verdicts(outcome, job.state.partitions[partition].early, rows, keys)
        job.emit(
            Settled(
                job.id,
                self.now(),
                partition,
                FINISHED if found is not None else FAILED,
                vendor_state=outcome.vendor_state,
                message=outcome.message,
                faults=None if found is None else found.rows,
                unmatched=0 if found is None else found.unmatched,
                imported=None if totals is None else totals.imported,
                rejected=None if totals is None else totals.rejected,
                reconciled=None if found is None else found.reconciled,
            )
        )


class Slot:
    """One of the budget's concurrency slots, held by one partition until ``hold`` is reached
    (or the partition ends, whichever is first): ``with slot:`` always gives it back."""

    UNTIL_SUBMITTED = "submitted"  # the vendor counts no running imports: only the submit
    UNTIL_VENDOR_DONE = "vendor_done"  # the vendor counts running imports: until one ends
    UNTIL_SETTLED = "settled"  # the reject-rate policy judges each verdict before more is sent

    def __init__(self, budget: Budget, hold: str) -> None:
        self.budget = budget
        self.hold = hold
        self.held = False

    async def take(self) -> None:
        await self.budget.slots.acquire()
        self.held = True

    def reached(self, point: str) -> None:
        if point == self.hold:
            self.free()

    def free(self) -> None:
        if self.held:
            self.held = False
            self.budget.slots.release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _first_crm_error(exc: BaseException) -> CrmError | None:
    if isinstance(exc, CrmError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = _first_crm_error(e)
            if found is not None:
                return found
    return None


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()  # a job whose target has not prepared it yet (``Target.prepare``)
