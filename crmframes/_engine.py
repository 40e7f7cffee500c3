"""The engine: the only code that sends or sleeps (DESIGN §4).

It drives the vendors' sans-I/O flows (``_flow``) on the background loop (``_loop``):
one httpx AsyncClient per connection, budgets per vendor account shared by every job
in the process, the one retry policy (``_retry``) around every call, token renewal.
Its I/O comes in as arguments (``Engine(transport=, sleep=, clock=)``); ``use`` runs jobs
on another engine. What a job sends and when, and the events that come of it: ``_run``.
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

from crmframes._errors import (
    AuthenticationError,
    InDoubt,
    UsageError,
    VendorError,
    VendorUnavailableError,
)
from crmframes._flow import Call, Ended, Flow, Pause, Progress, Reply, Request
from crmframes._retry import RetryPolicy
from crmframes._target import Target

if TYPE_CHECKING:
    from collections.abc import Iterator

    from crmframes._connection import Connection


# In-flight submits per account when the vendor documents no concurrency limit [I]
DEFAULT_INFLIGHT = 8
# D·engage counts its minute from when a call arrives; start each call a little later than
# the interval (a share of it, plus real seconds) so network jitter never lands one early.
PACE_MARGIN = 0.005
PACE_MARGIN_SECONDS = 0.01
USER_AGENT = "crmframes"
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
