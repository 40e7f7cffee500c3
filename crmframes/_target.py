"""What every target declares: limits as data, column binding, checks, framing.

A target is a frozen description (no I/O). ``target.bind(schema)`` resolves it against
a frame's columns into a ``Binding``: the frame-level problems, the row checks, the
row encoder and the request framing that the pipeline (``_pipeline``) runs.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from crmframes._errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from crmframes._connection import Connection
    from crmframes._flow import Flow, Reply, Request, Statuses, Submission


@dataclass(frozen=True)
class Limits:
    """A vendor endpoint's limits; every number carries the source it comes from.

    ``max_bytes`` bounds the whole request body; ``max_records`` the rows in it;
    ``max_concurrent`` the imports running at once (per ``concurrency_scope``);
    ``min_interval`` the seconds between two calls. ``typical_job_seconds`` is only
    used for plan estimates.
    """

    max_bytes: int | None
    max_records: int | None
    max_concurrent: int | None
    min_interval: float | None
    concurrency_scope: str
    typical_job_seconds: float
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """A sample file shipped in ``crmframes.samples`` and the options that send it to this
    target: ``crmframes demo`` runs every registered target's example, and the tests build one
    target per registered endpoint from them."""

    file: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Problem:
    """A frame-level problem (row is None) or a row problem found outside checks."""

    row: int | None
    column: str | None
    code: str
    problem: str


@dataclass(frozen=True)
class Check:
    """A vectorised row check: ``invalid`` is a boolean expression, True = problem."""

    column: str | None
    code: str
    problem: str
    invalid: pl.Expr


@dataclass(frozen=True)
class UniqueKey:
    """Rows sharing ``key`` in one import are rejected by the vendor: keep the first."""

    column: str
    key: pl.Expr  # normalised the way the vendor compares (e.g. lower-cased email)
    what: str


@dataclass(frozen=True)
class Framing:
    """How rows become a body: ``prefix + transform(head + rows - trim) + suffix``."""

    prefix: bytes
    suffix: bytes
    head: bytes = b""
    trim: int = 0  # bytes of the last row's separator that the body does not carry
    base64: bool = False
    content_type: str = "application/json"

    def row_budget(self, max_bytes: int | None) -> int | None:
        """Largest sum of row lengths (separators included) that keeps the body in limit."""
        if max_bytes is None:
            return None
        room = max_bytes - len(self.prefix) - len(self.suffix)
        if self.base64:  # base64 writes 4 bytes for every 3, rounded up
            room = (room // 4) * 3
        return room - len(self.head) + self.trim

    def body_size(self, rows_bytes: int) -> int:
        content = len(self.head) + rows_bytes - self.trim
        if self.base64:
            content = 4 * math.ceil(content / 3)
        return len(self.prefix) + content + len(self.suffix)

    def chunks(self, pieces: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """The body as consecutive buffers, without joining them (a hash can read them in turn)."""
        if self.trim and pieces:  # drop the last row's separator without copying
            pieces = [*pieces[:-1], memoryview(pieces[-1])[: -self.trim]]
        if not self.base64:
            return [self.prefix, self.head, *pieces, self.suffix]
        return [self.prefix, base64.b64encode(b"".join([self.head, *pieces])), self.suffix]

    def start(self) -> io.BytesIO:
        """A body to write rows into as they arrive; ``finish`` makes it whole."""
        buf = io.BytesIO()
        if not self.base64:
            buf.write(self.prefix)
        buf.write(self.head)
        return buf

    def finish(self, buf: io.BytesIO) -> bytes:
        """The body from ``start`` with its rows written in; ``buf`` is spent.

        CPython's ``BytesIO.getvalue`` hands over its own buffer when no view of it is
        held, so the rows are copied once, on arrival, and never again.
        """
        if self.base64:
            with buf.getbuffer() as view:
                rows = base64.b64encode(view[: len(view) - self.trim])
            return self.prefix + rows + self.suffix
        buf.seek(-self.trim, io.SEEK_END)
        buf.write(self.suffix)
        buf.truncate()
        return buf.getvalue()


@dataclass(frozen=True)
class Binding:
    """A target resolved against one frame schema."""

    target: Target
    problems: tuple[Problem, ...]  # frame-level; non-empty means the frame is unusable
    checks: tuple[Check, ...]
    unique: UniqueKey | None
    # one String per row, separator included; given the columns that hold nulls in the
    # batch (so null-stripping touches only those)
    encode: Callable[[frozenset[str]], pl.Expr] | None
    framing: Framing
    # the value the vendor echoes in its faults (lower-cased email, record key), per row
    report_key: pl.Expr | None = None
    notes: tuple[str, ...] = ()  # where columns go, for the plan (e.g. Qualtrics embeddedData)


def check_column(value: object, option: str, *, optional: bool = True) -> None:
    """A target option that names one frame column."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{option} must name a column of the frame (a string){' or be None' if optional else ''}; got {value!r}"
        )


def as_names(value: object, option: str) -> tuple[str, ...] | None:
    """A target option that lists frame columns: a list or tuple of strings (or None)."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigError(f'{option} must be a list of column names (strings), e.g. ["a", "b"]; got {value!r}')
    return tuple(value)


def name_map(value: object, option: str) -> tuple[str, ...] | dict[str, str] | None:
    """A list of columns, or a map from the vendor's name to the frame column it comes from."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()):
            raise ConfigError(
                f"{option} must map the vendor's names to column names (strings), e.g. "
                f"{{'name': 'first_name'}}; got {value!r}"
            )
        return dict(value)
    return as_names(value, option)


def check_deadline(seconds: object) -> None:
    """``poll_deadline``: vendor seconds of polling one import before it is reported pending."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ConfigError(
            f"poll_deadline is the seconds to keep polling one import before reporting it "
            f"pending (e.g. 3600); got {seconds!r}"
        )


class Target:
    """Base of every vendor target. Subclasses are frozen dataclasses."""

    name: ClassVar[str]
    limits: ClassVar[Limits]
    connection: Connection
    # re-sending a request whose answer was lost cannot duplicate data (an upsert by key)
    resend_safe: ClassVar[bool] = True
    # the import's status words and what each means (None: the vendor answers synchronously)
    statuses: ClassVar[Statuses | None] = None
    # failed-import words (case-folded) after which sending the same rows again may work
    retry_words: ClassVar[frozenset[str]] = frozenset()
    example: ClassVar[Example | None] = None

    @classmethod
    def vendor_and_method(cls) -> tuple[str, str]:
        """``("dotdigital", "contacts")`` for ``"dotdigital.contacts"``: the connection's key and
        the method of it that builds this target."""
        key, _, method = cls.name.partition(".")
        return key, method

    @classmethod
    def build(cls, connection: Connection, **options: Any) -> Target:
        """This target on ``connection``, built the way users build it (``dd.contacts(...)``)."""
        method = cls.vendor_and_method()[1]
        made: Target = getattr(connection, method)(**options)
        return made

    def concurrency_key(self) -> str:
        """What ``limits.max_concurrent`` counts against: the account, or (where
        ``limits.concurrency_scope`` names an option of the target) one list in it."""
        scope = self.limits.concurrency_scope
        if scope == "account":
            return self.connection.account()
        return f"{self.connection.account()}|{getattr(self, scope)}"

    def prepare(self, now_utc: str) -> Flow | None:
        """Job-level set-up before the first partition (e.g. a Qualtrics transaction batch).

        The flow's return value is the job's context, passed to every ``lifecycle``.
        """
        return None

    # One partition's import: ``submit_request`` → the engine sends it → ``accepted(reply)``
    # → ``track`` (a sans-I/O flow: poll → report → Outcome). Split so that the body is let go
    # as soon as it is sent, and a resumed job can track an import the vendor already has.

    method: ClassVar[str] = "POST"  # the submit call's HTTP method (Insight data: PUT)

    def submit_request(self, body: bytes, content_type: str, context: Any) -> Request:
        """The body as planned, sent to ``self.path``; a target whose envelope changes at
        send time (a Qualtrics batch id) overrides this."""
        from crmframes._flow import Request

        return Request(self.method, self.path, "submit", body, content_type)  # type: ignore[attr-defined]

    def accepted(self, reply: Reply) -> Submission:
        raise NotImplementedError

    def track(self, import_id: str, early: tuple[Any, ...], context: Any, sent: int = 0) -> Flow:
        """Poll the import and fetch its reports; ``sent``: records in the request."""
        raise NotImplementedError(f"{self.name} imports cannot be tracked after submit")

    def bind(self, schema: pl.Schema) -> Binding:  # pragma: no cover - abstract
        raise NotImplementedError

    # what a baseline keys rows by: the target's identity ("key": email, record key, contact_key)
    # or the whole record, for imports that append rather than upsert (Qualtrics transactions)
    baseline_key: ClassVar[str] = "key"

    def destination(self) -> str:
        """Where in the account the rows land (an address book, a collection, a list), for the
        baseline; no secret."""
        return ""

    def layout(self, binding: Binding) -> bytes:
        """The bytes besides a row's own that decide what the vendor makes of it (a CSV header,
        a column list, flags): a row hash is seeded with them."""
        f = binding.framing
        return f.prefix + f.head + f.suffix

    def account_checks(self, schema: pl.Schema) -> Flow | None:
        """The preflight's calls (sans-I/O): a flow returning the account problems of a frame
        with this schema (``Problem`` rows with no row number). None: the credentials alone are
        checked (a login, where the vendor has one)."""
        return None

    def with_limits(self, **changes: Any) -> Target:
        """A copy with tighter limits, e.g. ``t.with_limits(max_records=500)``.

        Raising a limit above the vendor's is refused: the vendor would reject the request.
        """
        new = copy.copy(self)
        vendor = type(self).limits
        for k, v in changes.items():
            if k not in TIGHTENABLE:
                raise ConfigError(
                    f"with_limits takes {', '.join(TIGHTENABLE)}; got {k!r}.{did_you_mean(k, TIGHTENABLE)}"
                )
            most = getattr(vendor, k)
            if k == "min_interval":
                least = most or 0.0
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not least <= v < math.inf:
                    raise ConfigError(
                        f"min_interval must be seconds between calls, at least the vendor's {least:g}; got {v!r}"
                    )
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (most is not None and v > most):
                bound = (
                    f"from 1 to {most:,} (the vendor's limit)"
                    if most is not None
                    else "of at least 1 (the vendor sets no limit)"
                )
                raise ConfigError(f"{k} must be an integer {bound}; got {v!r}")
        object.__setattr__(new, "limits", dataclasses.replace(self.limits, **changes))
        return new

    def describe(self) -> dict[str, Any]:
        """Options as plain data (no secrets): for reprs, the journal and the CLI."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"<{self.name} {opts}>"


TIGHTENABLE = ("max_bytes", "max_records", "max_concurrent", "min_interval")


# --- registry: one declaration per endpoint; duplicate names fail loudly -------------

_REGISTRY: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    scope = cls.limits.concurrency_scope
    if scope != "account" and scope not in getattr(cls, "__dataclass_fields__", {}):
        raise ConfigError(f"{cls.name}: concurrency_scope must be 'account' or an option of the target; got {scope!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"target {cls.name!r} is declared twice")
    _REGISTRY[cls.name] = cls
    return cls


def target_class(name: str) -> type[Target]:
    import crmframes.vendors  # noqa: F401  (declarations register themselves)

    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown target {name!r}; known targets: {known}.{did_you_mean(name, _REGISTRY)}") from None


def registered() -> dict[str, type[Target]]:
    import crmframes.vendors  # noqa: F401

    return dict(sorted(_REGISTRY.items()))
