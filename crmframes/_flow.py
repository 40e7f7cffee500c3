"""The vocabulary of sans-I/O job lifecycles (STYLE 1).

A vendor writes each lifecycle as a generator that *yields* steps and *receives*
answers; it never sends, sleeps or reads a clock. The engine (``_engine``) drives it:

    Call(request)      → the engine sends it (auth, retries, rate limits) and sends back a Reply
    Pause(seconds)     → the engine sleeps that many *vendor* seconds (scaled by the sandbox's
                         time scale) and sends back None
    Progress(word, %)  → the engine records the import's state on a poll and sends back None
    Ended(word)        → the vendor's import ended (its slot may be freed); sends back None

and the generator's return value is the outcome. Tests drive the same generators with
canned replies, without any network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator, Mapping
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
    # refusals the flow reads itself instead of failing the call (an optional report)
    answered: frozenset[int] = frozenset()
    cache: float = 0.0  # seconds a GET's answer may be reused for this connection (account metadata)

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
    """What the vendor said about one row, by position in the request or by the key it echoes.

    ``verdict`` is ``rejected`` (a fault) or ``accepted`` (the answer names the row as
    written: D·engage ``inserted``/``updated``, a Qualtrics import report line). A fault
    with neither index nor key is an answer that names no row (an unparseable error text).
    """

    reason: str
    detail: str | None = None
    index: int | None = None  # position in the request's records
    key: str | None = None  # the key the vendor echoes (lower-cased email, record key, contact_key)
    verdict: str = "rejected"  # rejected | accepted


@dataclass(frozen=True)
class Progress:
    """The import's state on one poll, worth recording and showing."""

    vendor_state: str | None
    percent: float | None = None


@dataclass(frozen=True)
class Ended:
    """The vendor's import ended (done or failed), before any report is fetched: a slot the
    vendor counts running imports against can go to the next partition."""

    vendor_state: str | None


Step = Call | Pause | Progress | Ended
Flow = Generator[Step, Reply | None, Any]


@dataclass(frozen=True)
class Totals:
    """The vendor's own counts for one import, to reconcile with what was sent."""

    imported: int | None  # records the vendor says it imported
    rejected: int | None  # records the vendor says it did not import
    # what each imported record also creates, where the target expects it (Qualtrics transactions)
    created: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What one import ended as. ``state``: finished | failed | pending (still running when
    the flow stopped polling at its deadline: the job stays resumable).

    How rows of a finished import become ``accepted`` (DESIGN §5): with ``named=True`` only
    rows the answer names as accepted (a ``Fault`` with verdict accepted); otherwise rows
    absent from the faults, and only when the faults reconcile with ``totals``. Every
    other row is ``in_doubt``.
    """

    import_id: str | None
    state: str
    vendor_state: str | None
    faults: tuple[Fault, ...] = ()
    totals: Totals | None = None
    message: str | None = None  # a failed import's reason; a pending one's last word
    named: bool = False
    # per-row answers that decide rows the totals leave open (a Qualtrics import report)
    extra: tuple[Fault, ...] = ()


# --- the words a vendor uses for an import's state ------------------------------------

DONE, FAILED, RUNNING = "done", "failed", "running"


@dataclass(frozen=True)
class Status:
    """One documented status word: what it means for the import, and where it is written."""

    word: str
    means: str  # done | failed | running
    source: str


class Statuses:
    """A vendor endpoint's status words, compared case-insensitively; unknown words are None."""

    def __init__(self, *rows: Status) -> None:
        self.rows = rows
        self._by_word = {r.word.casefold(): r for r in rows}

    def classify(self, word: object) -> Status | None:
        return self._by_word.get(str(word).strip().casefold()) if word is not None else None

    def words(self, means: str) -> tuple[str, ...]:
        return tuple(r.word for r in self.rows if r.means == means)

    def __iter__(self) -> Iterator[Status]:
        return iter(self.rows)


def member(doc: Any, *names: str) -> Any:
    """A member of a JSON object whatever its case (camelCase or PascalCase), else None."""
    if not isinstance(doc, Mapping):
        return None
    for name in names:
        if name in doc:
            return doc[name]
    folded = {str(k).casefold(): v for k, v in doc.items()}
    for name in names:
        if name.casefold() in folded:
            return folded[name.casefold()]
    return None


def as_int(value: Any) -> int | None:
    """A count the vendor may send as a number or a numeric string; None when absent or not one."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None


def as_percent(value: Any) -> float | None:
    """``percentComplete`` as a number, from a number or a string such as ``"50.0"``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(str(value).strip().rstrip("%"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Submission:
    """What the submit answer says: the import id, or (synchronous vendors) the outcome itself."""

    import_id: str | None
    vendor_state: str | None
    early: tuple[Fault, ...] = ()  # faults already in the submit answer (Qualtrics unprocessed)
    outcome: Outcome | None = None  # set when the answer is the whole report (D·engage)


@dataclass(frozen=True)
class StatusAnswer:
    """One status answer, read: the vendor's word, what it means, and the document."""

    word: str | None
    means: str | None  # done | failed | running, or None for a word no document lists
    percent: float | None
    doc: Any


def poll(
    request: Request, read: Callable[[Any], StatusAnswer], intervals: Iterator[float], deadline: float
) -> Generator[Step, Reply | None, tuple[StatusAnswer | None, bool]]:
    """Poll ``request`` on the vendor's schedule until its answer means done or failed.

    Returns ``(last answer, True)`` once the import ended, or ``(last answer, False)`` when
    ``deadline`` vendor seconds of waiting passed while it still ran or stood in a word no
    document lists: the caller reports it pending, never polls forever. The import's slot
    is freed (``Ended``) as soon as it ends, before any report is fetched.
    """
    waited = 0.0
    last: StatusAnswer | None = None
    for wait in intervals:
        if waited >= deadline:
            return last, False
        wait = min(wait, deadline - waited)  # the last poll lands on the deadline
        yield from pause(wait, "poll")
        waited += wait
        last = read((yield from call(request)).json())
        yield Progress(last.word, last.percent)
        if last.means in (DONE, FAILED):
            yield Ended(last.word)
            return last, True
    raise AssertionError("unreachable")  # pragma: no cover


def still_running(import_id: str, last: StatusAnswer | None, deadline: float, vendor: str) -> Outcome:
    """The outcome of an import still running (or in an unknown state) at the deadline."""
    word = None if last is None else last.word
    return Outcome(
        import_id,
        "pending",
        word,
        message=(
            f"{vendor} still reports {word!r} after {deadline:,.0f} s of polling (the target's "
            "poll_deadline); job.wait() or cf.resume() polls it again"
        ),
    )


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
