"""The vocabulary of sans-I/O job lifecycles (STYLE 1).

A vendor writes each lifecycle as a generator that *yields* steps and *receives*
answers; it never sends, sleeps or reads a clock. The engine (``_engine``) drives it:

    Call(request)      → the engine sends it (auth, retries, rate limits) and sends back a Reply
    Pause(seconds)     → the engine sleeps that many *vendor* seconds (scaled by the sandbox's
                         time scale) and sends back None
    Note(state, ...)   → the engine records progress (import id, vendor state) and sends back None

and the generator's return value is the outcome. Tests drive the same generators with
canned replies, without any network.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One vendor call, described. ``idempotent``: safe to repeat if its answer is lost."""

    method: str
    path: str
    call: str  # what the call is for, in errors and events: submit | poll | report | login | batch
    content: bytes | None = None
    content_type: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    authenticated: bool = True

    def __repr__(self) -> str:  # bodies can be 50 MB and hold personal data: never print them
        size = 0 if self.content is None else len(self.content)
        return f"Request({self.method} {self.path}, call={self.call!r}, bytes={size})"


@dataclass(frozen=True)
class Reply:
    """A vendor answer as the flows see it (status, headers lower-cased, body)."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8-sig", errors="replace")


@dataclass(frozen=True)
class Call:
    request: Request


@dataclass(frozen=True)
class Pause:
    seconds: float  # in vendor seconds; the engine scales them (sandbox time scale)
    why: str


@dataclass(frozen=True)
class Fault:
    """A row the vendor reported, by position in the request or by the key it echoes."""

    reason: str
    detail: str | None = None
    index: int | None = None  # position in the request's records
    key: str | None = None  # the key the vendor echoes (lower-cased email, record key, contact_key)


@dataclass(frozen=True)
class Note:
    """Progress worth recording: the vendor's import id once known, its state on each poll."""

    state: str  # submitted | polled
    import_id: str | None = None
    vendor_state: str | None = None
    percent: float | None = None


Step = Call | Pause | Note
Flow = Generator[Step, Reply | None, Any]


@dataclass(frozen=True)
class Totals:
    """The vendor's own counts for one import, to reconcile with what was sent."""

    imported: int | None  # records the vendor says it imported
    rejected: int | None  # records the vendor says it did not import
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one import ended as. ``state``: finished | failed."""

    import_id: str | None
    state: str
    vendor_state: str | None
    faults: tuple[Fault, ...] = ()
    totals: Totals | None = None
    message: str | None = None  # a failed import's reason


@dataclass(frozen=True)
class Submission:
    """What the submit answer says: the import id, or (synchronous vendors) the outcome itself."""

    import_id: str | None
    vendor_state: str | None
    early: tuple[Fault, ...] = ()  # faults already in the submit answer (Qualtrics unprocessed)
    outcome: Outcome | None = None  # set when the answer is the whole report (D·engage)


def poll_intervals(first: float = 5.0, growth: float = 1.5, cap: float = 30.0) -> Iterator[float]:
    """Dotdigital's recommended polling: every 5–30 s, growing (DD-WEB importinsightdata)."""
    wait = first
    while True:
        yield wait
        wait = min(cap, wait * growth)


def call(request: Request) -> Generator[Step, Reply | None, Reply]:
    """``reply = yield from call(req)``: one Call step with its reply typed."""
    reply = yield Call(request)
    assert isinstance(reply, Reply)
    return reply


def pause(seconds: float, why: str) -> Generator[Step, Reply | None, None]:
    yield Pause(seconds, why)


def note(state: str, **kw: Any) -> Generator[Step, Reply | None, None]:
    yield Note(state, **kw)
