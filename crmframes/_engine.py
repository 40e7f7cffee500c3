"""The engine: the only code that sends or sleeps (DESIGN §4).

It drives the vendors' sans-I/O flows (``_flow``) on the background loop (``_loop``):
one httpx AsyncClient per connection, budgets per vendor account shared by every job
in the process, the one retry policy (``_retry``) around every call, token renewal,
and events out to the job's accumulator and sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from crmframes._connection import Connection
from crmframes._errors import (
    AuthenticationError,
    ConfigError,
    CrmError,
    FrameError,
    InDoubt,
    UsageError,
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
from crmframes._flow import Call, Ended, Flow, Outcome, Pause, Progress, Reply, Request
from crmframes._report import verdicts
from crmframes._retry import RetryPolicy
from crmframes._target import Target

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

    import polars as pl

    from crmframes._events import JobState
    from crmframes._flow import Submission
    from crmframes._pipeline import Payload


class Job(Protocol):
    """What a job's run reads and calls (``_job.Job`` is one): the engine imports no job
    module, so data flows one way, job → engine (DESIGN §4)."""

    id: str
    target: Target
    state: JobState
    retry: RetryPolicy
    context: Any
    hashes: list[str]
    resend_in_doubt: bool
    max_reject_rate: float | None
    error: CrmError | None

    def emit(self, event: Any) -> None: ...
    def stop_reason(self) -> tuple[str, str] | None: ...
    def set_context(self, context: Any) -> None: ...
    def on_retry(self, partition: int | None) -> Callable[[str, str, float, int | None], None]: ...
    def payload_iter(self) -> Generator[tuple[Payload, str], None, None]: ...
    def lineage(self, partition: int) -> tuple[pl.Series, pl.Series | None]: ...


# In-flight submits per account when the vendor documents no concurrency limit [I]
DEFAULT_INFLIGHT = 8
# D·engage counts its minute from when a call arrives; start each call a little later than
# the interval (a share of it, plus real seconds) so network jitter never lands one early.
PACE_MARGIN = 0.005
PACE_MARGIN_SECONDS = 0.01
USER_AGENT = "crmframes"
# seconds an interrupted run still waits for a submit already on the wire
INTERRUPT_GRACE = 10.0
CONNECT_TIMEOUT = 15.0


class Clock(Protocol):
    """Where the engine reads the time (the ``time`` module is one)."""

    def time(self) -> float: ...
    def monotonic(self) -> float: ...


class Session:
    """One connection's HTTP client, token and the sandbox time scale it reports.

    It holds its connection weakly: the engine keys sessions by connection in a weak
    dictionary, and a value that referred to its key would keep every connection (and
    its open sockets) alive for the life of the process.
    """

    def __init__(self, conn: Connection, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._conn = weakref.ref(conn)
        self.client = httpx.AsyncClient(
            base_url=conn.base_url,
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(conn.timeout, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            transport=transport,
        )
        # only the embedded sandbox may shorten vendor time, and it serves only on loopback
        self.trusts_time_scale = conn.is_sandbox()
        self.scale = 1.0
        self.cache: dict[tuple[str, str], tuple[float, Reply]] = {}  # (path, params) → (expires, answer)
        self.token: str | None = None
        self.token_expires = 0.0
        self.token_lock = asyncio.Lock()

    @property
    def conn(self) -> Connection:
        conn = self._conn()
        if conn is None:  # a job holds its target, which holds its connection: cannot happen mid-call
            raise UsageError("the connection of this HTTP session was garbage-collected")
        return conn

    def learn_scale(self, headers: httpx.Headers) -> None:
        raw = headers.get("x-sandbox-time-scale")
        if raw and self.trusts_time_scale:
            with contextlib.suppress(ValueError):
                self.scale = max(0.0, float(raw))


class Budget:
    """Concurrency slots and call pacing for one vendor account (or one list in it)."""

    def __init__(self, slots: int, interval: float | None) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.interval = interval
        self.last_start = -1e18
        self.pace_lock = asyncio.Lock()

    async def pace(self, scale: float, sleep: Callable[[float], Awaitable[None]], clock: Clock) -> None:
        """Start calls at least ``interval`` (vendor seconds) apart.

        The gap is computed from the last start with the scale known *now*: the first
        answer is what tells a client that it talks to a time-scaled sandbox.
        """
        if not self.interval:
            return
        async with self.pace_lock:
            gap = self.interval * scale * (1 + PACE_MARGIN) + PACE_MARGIN_SECONDS
            delay = self.last_start + gap - clock.monotonic()
            if delay > 0:
                await sleep(delay)
            self.last_start = clock.monotonic()


class Engine:
    """Process-wide state on the engine loop: sessions per connection, budgets per account."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock = time,
    ) -> None:
        """Its I/O comes in here, so tests replace it rather than patch it: ``transport``
        for every client (httpx's ``MockTransport``, or ``ASGITransport`` to serve the sandbox
        in-process), ``sleep`` for every wait (back-off, Retry-After, polls, pacing), ``clock``
        (``time()`` and ``monotonic()``) for every timestamp and interval."""
        self.sessions: weakref.WeakKeyDictionary[Connection, Session] = weakref.WeakKeyDictionary()
        self.budgets: dict[tuple[str, str], Budget] = {}
        self.rng = random.Random()
        self.transport = transport
        self.sleep = sleep
        self.clock = clock

    def session(self, conn: Connection) -> Session:
        s = self.sessions.get(conn)
        if s is None or s.client.is_closed:
            s = self.sessions[conn] = Session(conn, self.transport)
            # a connection dropped without close() still closes its sockets
            weakref.finalize(conn, _close_soon, s.client)
        return s

    async def close(self, conn: Connection) -> None:
        s = self.sessions.pop(conn, None)
        if s is not None:
            await s.client.aclose()

    async def close_all(self) -> None:
        for conn in list(self.sessions):
            await self.close(conn)

    def budget(self, target: Target) -> Budget:
        lim = target.limits
        key = (target.name, target.concurrency_key())
        b = self.budgets.get(key)
        if b is None:
            b = self.budgets[key] = Budget(lim.max_concurrent or DEFAULT_INFLIGHT, lim.min_interval)
        return b

    # --- one call, under the retry policy ---

    async def call(
        self,
        s: Session,
        req: Request,
        policy: RetryPolicy,
        *,
        pace: Budget | None = None,
        on_retry: Callable[[str, float, int | None], None] | None = None,
    ) -> Reply:
        vendor = s.conn.vendor
        cached_as = (
            (req.path, json.dumps(dict(req.params), sort_keys=True)) if req.cache and req.method == "GET" else None
        )
        if cached_as is not None:
            hit = s.cache.get(cached_as)
            if hit is not None and hit[0] > self.clock.monotonic():
                return hit[1]
        attempt = 0
        started = self.clock.monotonic()
        relogged = False
        while True:
            attempt += 1
            headers = {}
            if req.authenticated:
                headers.update(await self.auth_headers(s, policy))
            if pace is not None:  # after any login, so the pace counts from when the call really leaves
                await pace.pace(s.scale, self.sleep, self.clock)
            if req.content_type:
                headers["Content-Type"] = req.content_type
            status: int | None = None
            transport: str | None = None
            cause: httpx.TransportError | None = None  # kept as the raised error's __cause__
            reply: Reply | None = None
            try:
                r = await s.client.request(
                    req.method, req.path, content=req.content, headers=headers, params=dict(req.params) or None
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                transport, cause = "connect", exc
            except httpx.TransportError as exc:
                transport, cause = "read", exc  # sent, but the answer was lost or cut short
            else:
                s.learn_scale(r.headers)
                reply = Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
                status = r.status_code
                if 200 <= status < 300 or status in req.answered:
                    if cached_as is not None:
                        s.cache[cached_as] = (self.clock.monotonic() + req.cache, reply)
                    return reply
                if status == 401 and s.conn.login() is not None and not relogged:
                    s.token, relogged = None, True  # the token expired early or was revoked: renew once
                    continue
                if status in (401, 403):
                    raise AuthenticationError(vendor, req.call, status, s.conn.error_message(reply), _auth_hint(status))
            decision = policy.decide(
                attempt,
                status=status,
                headers=reply.headers if reply else None,
                busy=bool(reply and s.conn.busy(reply)),
                transport=transport,
                idempotent=req.idempotent,
                now_epoch=self.clock.time(),
                rng=self.rng,
            )
            if decision.retry and self.clock.monotonic() - started > policy.give_up_after:
                decision = decision.__class__(False, why="exhausted")
            if not decision.retry:
                if decision.in_doubt:
                    raise InDoubt(
                        f"{vendor} {req.call}: the answer was lost ({transport or status}); the "
                        "request may have been applied and is not repeated automatically"
                    ) from cause
                message = s.conn.error_message(reply) if reply is not None else f"transport error ({transport})"
                if decision.why == "exhausted":
                    raise VendorUnavailableError(
                        vendor,
                        req.call,
                        status,
                        message,
                        f"Gave up after {attempt} attempts; the job is resumable: call job.wait() again later.",
                    ) from cause
                raise VendorError(vendor, req.call, status, message) from cause
            wait = decision.wait * s.scale
            if on_retry is not None:
                on_retry(decision.why, wait, status)
            await self.sleep(wait)

    async def auth_headers(self, s: Session, policy: RetryPolicy) -> dict[str, str]:
        login = s.conn.login()
        if login is None:
            return s.conn.auth_headers(None)
        async with s.token_lock:
            if s.token is None or self.clock.monotonic() >= s.token_expires:
                try:
                    reply = await self.call(s, login, policy)
                except VendorError as e:
                    if e.status in (400, 401):
                        raise AuthenticationError(
                            e.vendor, "login", e.status, e.message, "Check the user key and password."
                        ) from e
                    raise
                token, ttl = s.conn.parse_login(reply)
                # renew a minute before expiry, as D·engage advises (CONTRACTS §5)
                s.token, s.token_expires = token, self.clock.monotonic() + max(0.0, ttl - 60) * s.scale
            return s.conn.auth_headers(s.token)

    # --- one flow ---

    async def drive(
        self,
        flow: Flow,
        s: Session,
        policy: RetryPolicy,
        *,
        pace: Budget | None = None,
        on_progress: Callable[[Progress | Ended], None] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
        on_retry: Callable[[str, str, float, int | None], None] | None = None,
    ) -> Any:
        """Run a sans-I/O flow to its return value; the flow is closed however this ends
        (an error, a cancel), as httpx closes its auth flows."""
        reply: Reply | None = None
        try:
            while True:
                try:
                    step = flow.send(reply)
                except StopIteration as stop:
                    return stop.value
                reply = None
                if isinstance(step, Call):
                    req = step.request
                    pacer = pace if req.call == "submit" else None
                    retry = None if on_retry is None else (lambda why, w, st, c=req.call: on_retry(c, why, w, st))
                    reply = await self.call(s, req, policy, pace=pacer, on_retry=retry)
                elif isinstance(step, Pause):
                    if on_pause is not None:
                        on_pause(step.why, step.seconds * s.scale)
                    await self.sleep(step.seconds * s.scale)
                elif on_progress is not None:
                    on_progress(step)
        finally:
            flow.close()


async def preflight(target: Target, flow: Flow | None, policy: RetryPolicy, *, fresh: bool = False) -> Any:
    """Run a target's account checks: the login first where the vendor has one (so refused
    credentials surface as ``AuthenticationError``), then the flow's calls.

    Their answers are cached a minute per connection; ``fresh`` asks again (an explicit
    ``validate(account=True)`` does), and problems found drop the cache, so the check after
    a fix in the account sees the fix."""
    eng = engine()
    s = eng.session(target.connection)
    if fresh:
        s.cache.clear()
    if s.conn.login() is not None:
        await eng.auth_headers(s, policy)
    found = [] if flow is None else await eng.drive(flow, s, policy)
    if found:
        s.cache.clear()
    return found


_ENGINE: Engine | None = None
_CLOSING: set[asyncio.Task[None]] = set()  # tasks closing dropped clients (asyncio keeps them weakly)


def _close_soon(client: httpx.AsyncClient) -> None:
    """Close a dropped connection's client on the engine loop (called by the GC, any thread)."""
    from crmframes import _loop

    lp = _loop.current()
    if lp is None or lp.is_closed() or client.is_closed:
        return

    def start() -> None:
        task = lp.create_task(client.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile: the process is ending
        lp.call_soon_threadsafe(start)


def close_connection(conn: Connection) -> None:
    """Close ``conn``'s HTTP client now (``conn.close()``); it reopens on its next use."""
    from crmframes import _loop

    if _ENGINE is None or conn not in _ENGINE.sessions:
        return
    if _loop.on_loop_thread():
        _close_soon(_ENGINE.sessions.pop(conn).client)
        return
    _loop.result(_loop.start(_ENGINE.close(conn)), timeout=30)


async def aclose_connection(conn: Connection) -> None:
    """The async twin of ``close_connection``."""
    if _ENGINE is None or conn not in _ENGINE.sessions:
        return
    from crmframes import _loop

    await asyncio.wrap_future(_loop.start(_ENGINE.close(conn)))


def engine() -> Engine:
    """The engine of the background loop (created there on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine()
    return _ENGINE


@contextlib.contextmanager
def use(eng: Engine) -> Iterator[Engine]:
    """Run jobs on ``eng`` inside the block (``with use(Engine(transport=...)):``), then close
    its clients and put the process engine back."""
    global _ENGINE
    from crmframes import _loop

    before, _ENGINE = _ENGINE, eng
    try:
        yield eng
    finally:
        _ENGINE = before
        if eng.sessions:
            _loop.result(_loop.start(eng.close_all()), timeout=30)


def _auth_hint(status: int) -> str:
    if status == 403:
        return "The credentials work but lack a permission for this call; ask the account admin."
    return "Check the credentials (arguments or environment variables)."


def now_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- a job's run ---------------------------------------------------------------------


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
        if job.context is _UNSET:
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
                    sent = await self.submit_one(partition, payload, slot)
                    del payload
                    if not sent:  # a synchronous answer was the whole outcome
                        return
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

    async def submit_one(self, partition: int, payload: Payload, slot: Slot) -> bool:
        """Send one partition's body. True when the vendor took it as an import to track."""
        job, target = self.job, self.target
        retry = job.on_retry(partition)
        self.emit(Sending(job.id, self.now(), partition))
        req = target.submit_request(payload.body, payload.content_type, job.context)
        del payload  # the body can be 50 MB: only the request holds it, until it is sent
        send = asyncio.ensure_future(
            self.eng.call(
                self.session,
                req,
                job.retry,
                pace=self.budget,
                on_retry=lambda why, w, st: retry("submit", why, w, st),
            )
        )
        del req
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


_UNSET: Any = _Unset()
