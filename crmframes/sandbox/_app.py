"""The sandbox ASGI app: one server for Dotdigital, Qualtrics and D·engage at their real paths.

``Sandbox`` is itself the ASGI callable. It owns the knobs and the state, answers the
control paths (``/_sandbox/...``), and around every vendor path applies the fault knobs
(``p429``, ``p5xx``, ``p_drop``, ``latency``) in that vendor's error shape. Each vendor's
endpoints live in their own module (``dotdigital``, ``qualtrics``, ``dengage``), written
from the vendors' documents and CONTRACTS §6, not from the client's code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import pkgutil
import random
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from crmframes._errors import ConfigError
from crmframes.sandbox import _rules as R
from crmframes.sandbox._state import BadRequest, Job, Knobs, SandboxState, pick

# every module of the sandbox package not starting with "_" emulates one vendor: a new vendor
# is a new module declaring KEY, CREDENTIALS, ENDPOINTS, STORE, PREFIXES, VARIANTS, holds() and routes()
VENDORS: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"{__package__}.{m.name}")
    for m in pkgutil.iter_modules([str(Path(__file__).parent)])
    if not m.name.startswith("_")
)
VARIANTS: dict[str, str] = {name: text for v in VENDORS for name, text in v.VARIANTS.items()}
ENDPOINTS: tuple[str, ...] = tuple(e for v in VENDORS for e in v.ENDPOINTS)
CREDS: dict[str, tuple[str, ...]] = {v.KEY: v.CREDENTIALS for v in VENDORS}
log = logging.getLogger("crmframes.sandbox")


def vendor_of(path: str) -> ModuleType | None:
    for v in VENDORS:
        if path.startswith(v.PREFIXES):
            return v
    return None


class Sandbox:
    """Knobs, state and routes; an instance is the ASGI app to serve."""

    def __init__(
        self,
        *,
        credentials: dict[str, tuple[str, ...]] | None = None,
        contacts: list[str] | None = None,
        data_fields: dict[str, str] | None = None,
        **knobs: Any,
    ) -> None:
        """``contacts``: emails the Dotdigital account already holds; ``data_fields``: contact
        data fields it has besides Dotdigital's defaults, ``{name: String|Numeric|Date|Boolean}``."""
        self.knobs = Knobs()
        self.knobs.update(knobs, VARIANTS, ENDPOINTS)
        self.state = SandboxState({v.KEY: v.STORE for v in VENDORS})
        self.state.known_contacts.update(c.lower() for c in contacts or [])
        self.extra_fields = dict(data_fields or {})
        self._seed()
        self.credentials = credentials or {}
        self.rng = random.Random(self.knobs.seed)
        self.clock = time.monotonic
        routes = [
            Route("/_sandbox/state", self.get_state, methods=["GET"]),
            Route("/_sandbox/config", self.config, methods=["GET", "POST"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
        ]
        for v in VENDORS:
            routes += v.routes(self)
        self.app = Starlette(routes=routes)

    def _seed(self) -> None:
        """What an account holds before any import (Dotdigital's default data fields)."""
        for v in VENDORS:
            if hasattr(v, "seed_account"):
                v.seed_account(self.state, self.extra_fields)

    def variant(self, name: str) -> bool:
        return name in self.knobs.variants

    # ASGI entry: faults, latency and the time-scale header around the routes
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        vendor = vendor_of(scope["path"])
        scale_header = (b"x-sandbox-time-scale", repr(self.knobs.time_scale).encode())

        async def send_scaled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), scale_header]
            await send(message)

        if vendor is None:
            await self.app(scope, receive, send_scaled)
            return
        k = self.knobs
        if k.latency:
            await asyncio.sleep(k.latency)
        roll = self.rng.random
        if k.p429 and roll() < k.p429:
            await self._rate_limited(vendor, scope["path"])(scope, receive, send_scaled)
            return
        if k.p5xx and roll() < k.p5xx:
            await vendor.error(503, "The service is temporarily unavailable.", scope["path"])(
                scope, receive, send_scaled
            )
            return
        if k.p_drop and roll() < k.p_drop:  # process the call, then lose the answer: the hard case
            await self.app(scope, receive, _dropping(send_scaled))
            log.warning("sandbox: dropped the answer to %s %s (p_drop)", scope.get("method"), scope["path"])
            return
        try:
            await self.app(scope, receive, send_scaled)
        except Exception:  # never leak a traceback; answer in the vendor's shape
            log.exception("sandbox: %s %s failed", scope.get("method"), scope["path"])
            await vendor.error(500, "Unexpected error.", scope["path"])(scope, receive, send_scaled)

    def _rate_limited(self, vendor: ModuleType, path: str) -> Response:
        wait = self.rng.randint(*R.RETRY_AFTER)
        r = vendor.error(429, "Too many requests; retry later.", path)
        r.headers["Retry-After"] = str(wait)
        for name, value in vendor.rate_limit_headers(wait).items():
            r.headers[name] = value
        return r

    # --- what the vendor modules share ---

    def now(self) -> float:
        now = self.clock()
        with self.state.lock:
            self.state.settle(now)
        return now

    def new_job(
        self,
        kind: str,
        rows: int,
        *,
        done: tuple[str, ...],
        failed: str,
        terminal: tuple[str, ...] = (),
        starts: float | None = None,
        **info: Any,
    ) -> Job:
        """An import that ends with a word drawn from the status mix (else ``done[0]``, or
        ``failed`` with ``p_job_fail``). ``done``: the words that mean done; ``terminal``:
        the other words that end an import (failures)."""
        assert kind in ENDPOINTS
        now = self.clock()
        final = done[0]
        mix = self.knobs.status_mix.get(kind)
        if mix:
            final = pick(self.rng, mix)
        elif self.knobs.p_job_fail and self.rng.random() < self.knobs.p_job_fail:
            final = failed
        folded = final.casefold()
        is_done = folded in {w.casefold() for w in done}
        ended = is_done or folded in {w.casefold() for w in (*terminal, failed)}
        job = Job(
            kind,
            str(uuid.uuid4()),
            now if starts is None else starts,
            self.knobs.job_duration,
            final,
            is_done,
            rows,
            ended,
            info=info,
        )
        self.state.jobs[job.id] = job
        return job

    async def body(self, request: Request, limit: int, too_large: Response) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(too_large)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(too_large)
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self, request: Request, limit: int, too_large: Response, bad: Response) -> Any:
        raw = await self.body(request, limit, too_large)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(bad) from None

    def endpoint(self, vendor: ModuleType, handler: Any) -> Any:
        """A route's endpoint for ``handler(sandbox, request)``: the vendor's authorisation
        first, and its refusals (``BadRequest``) answered in its own shape."""

        async def endpoint(request: Request) -> Response:
            return await self.guarded(request, vendor, lambda: handler(self, request))

        return endpoint

    async def guarded(self, request: Request, vendor: ModuleType, handler: Any) -> Response:
        denied = vendor.authorised(self, request)
        if denied is not None:
            return denied
        try:
            return await handler()
        except BadRequest as e:
            return e.response

    # --- sandbox control ---

    async def get_state(self, request: Request) -> Response:
        now = self.now()
        with self.state.lock:
            running = sum(1 for j in self.state.jobs.values() if not j.done(now))
            body = JSONResponse(json.loads(json.dumps(self.state.store)))
        body.headers["X-Sandbox-Running-Jobs"] = str(running)  # lets a reader wait for a settled account
        return body

    async def config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ConfigError("send a JSON object of knobs")
                contacts = changes.pop("contacts", None)
                self.knobs.update(changes, VARIANTS, ENDPOINTS)
                if "seed" in changes:
                    self.rng = random.Random(self.knobs.seed)
                if contacts:
                    self.state.known_contacts.update(str(c).lower() for c in contacts)
            except (ValueError, TypeError) as e:
                return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(asdict(self.knobs))

    async def reset(self, request: Request) -> Response:
        with self.state.lock:
            self.state.__init__(self.state.stores)  # type: ignore[misc]
            self._seed()
        return JSONResponse({"reset": True})


def _dropping(send: Send) -> Send:
    """Send the status line and the first bytes of the body, then never the rest: when the
    app returns, the server closes the connection mid-answer (uvicorn logs one line, no
    traceback), and the client sees the answer cut short."""
    sent = False

    async def truncated(message: Message) -> None:
        nonlocal sent
        if message["type"] == "http.response.start":
            await send(message)
        elif message["type"] == "http.response.body" and not sent:
            sent = True
            await send({"type": "http.response.body", "body": message.get("body", b"")[:5], "more_body": True})

    return truncated


__all__ = ["VARIANTS", "BadRequest", "Knobs", "Sandbox"]
