"""D·engage: BulkUpsert of master contacts (synchronous, 1,000 records, once a minute).

Contract and sources: shared/vendors/CONTRACTS.md §5.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from crmframes import _checks as chk
from crmframes._connection import (
    Connection,
    Secret,
    clean_base_url,
    fingerprint,
    host,
    need,
    option,
    register_connection,
    secret,
)
from crmframes._encode import DateFormats, json_object
from crmframes._errors import ConfigError, did_you_mean
from crmframes._flow import DONE, FAILED, Fault, Outcome, Reply, Request, Status, Statuses, Submission, Totals, member
from crmframes._target import Binding, Check, Example, Framing, Limits, Problem, Target, UniqueKey, name_map, register

DN_BULK = "https://dev.dengage.com/reference/updatecontactsbulk"
HOSTS = {r: f"https://{r}-api.dengage.com" for r in ("tr", "us", "eu", "ru", "sa", "dev")}  # DN-SFCC
# D·engage's documented date-time formats are yyyy-MM-dd HH:mm:ss with an optional .f/.ff/.fff
# fraction and a Z suffix (DN-DOCS): a fraction only when there is one, at most milliseconds;
# dates are yyyy-MM-dd, at most 10 characters (seed §5, CONTRACTS §6)
DATES = DateFormats(naive="%Y-%m-%d %H:%M:%S%.f", aware="%Y-%m-%dT%H:%M:%S%.fZ", date="%Y-%m-%d", finest="1ms")
# The standard import template's columns (D·engage UI, [S] DN-PS) plus city [S]; only
# import-enabled columns may be sent (seed §5), so any other column must be named in columns=
IMPORT_TEMPLATE = (
    "contact_key",
    "contact_status",
    "email",
    "email_permission",
    "email_status",
    "gsm",
    "gsm_permission",
    "gsm_status",
    "name",
    "surname",
    "gender",
    "birth_date",
    "segment",
    "source",
    "subscription_date",
    "rfm_score",
    "rfm_segment",
    "rfm_mobile_score",
    "rfm_mobile_segment",
    "gsm_source",
    "email_source",
    "gsm_consent_date",
    "email_consent_date",
    "contact_type",
    "city",
)
DATE_COLUMNS = ("birth_date",)  # "date string, length <= 10" (DN-REF body params; seed §5)
# character limits (DN-REF body params, seed §5: email <= 255; gsm <= 20; name, surname, gender <= 100)
MAX_CHARS = {"email": 255, "gsm": 20, "name": 100, "surname": 100, "gender": 100}
# the envelope's code (DN-PS observed; ResponseCodes of the async twin, DN-REF): 0 is success,
# any other code refuses the whole call
RESPONSE_CODES = Statuses(
    Status("0", DONE, "[S] DN-PS runbook §5.2 (success)"),
    Status("1", FAILED, "DN-REF updatecontactsbulkasync ResponseCodes FieldError"),
    Status("10", FAILED, "DN-REF ResponseCodes Forbidden"),
    Status("11", FAILED, "DN-REF ResponseCodes ValidationFails"),
    Status("999", FAILED, "DN-REF ResponseCodes UnexpectedError"),
)


@register_connection
class Dengage(Connection):
    """A D·engage API user. Credentials: arguments or DENGAGE_USER_KEY / DENGAGE_PASSWORD."""

    key = "dengage"
    vendor = "D·engage"
    timeout = 121.0  # [I] no documented figure: as Dotdigital's

    def __init__(
        self,
        user_key: str | Secret | None = None,
        password: str | Secret | None = None,
        *,
        region: str | None = None,
        base_url: str | None = None,
    ) -> None:
        self.user_key = secret(user_key, "DENGAGE_USER_KEY")
        self.password = secret(password, "DENGAGE_PASSWORD")
        self.region = option(region, "DENGAGE_REGION", "eu") or "eu"
        url = option(base_url, "DENGAGE_BASE_URL")
        self.base_url = clean_base_url(url) if url else host(self.region, HOSTS, "region", "DENGAGE_REGION")

    def __repr__(self) -> str:
        creds = "set" if self.user_key and self.password else "missing"
        return f"Dengage(user_key=***, password=***, region={self.region!r}, base_url={self.base_url!r}, credentials={creds})"

    def login_body(self) -> dict[str, str]:
        need(self.user_key, "user_key", "DENGAGE_USER_KEY", self.vendor)
        need(self.password, "password", "DENGAGE_PASSWORD", self.vendor)
        assert self.user_key is not None and self.password is not None
        return {"userkey": self.user_key.reveal(), "password": self.password.reveal()}

    credential_vars = ("DENGAGE_USER_KEY", "DENGAGE_PASSWORD")

    def check_credentials(self) -> None:
        self.login_body()

    def identity(self) -> str:  # the API user key, one-way: a password change keeps the baseline
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.user_key.reveal() if self.user_key else None)}"

    def account(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.user_key.reveal() if self.user_key else None)}"

    def login(self) -> Request:
        """``POST /rest/login`` (CONTRACTS §5); the body holds the password: never logged."""
        return Request(
            "POST",
            "/rest/login",
            "login",
            json.dumps(self.login_body()).encode(),
            "application/json",
            authenticated=False,
        )

    def parse_login(self, reply: Reply) -> tuple[str, float]:
        doc = reply.json()
        return str(doc["access_token"]), float(doc.get("expires_in") or 3600)

    def auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def error_message(self, reply: Reply) -> str:
        if reply.status == 403 and not reply.content:
            return (
                "403 with an empty body: the API user lacks the DataSpace.Manage permission, or "
                "this machine's IP is not on the account's API allow-list"
            )
        try:
            doc = reply.json()
            return f"code {doc.get('code')}: {doc.get('message')}"
        except (ValueError, AttributeError):
            return super().error_message(reply)

    def contacts(
        self,
        *,
        insert_if_not_exists: bool = True,
        throw_exception_if_invalid_record: bool = False,
        columns: Sequence[str] | Mapping[str, str] | None = None,
    ) -> DengageContacts:
        """BulkUpsert. ``columns``: the account's import-enabled columns to send (contact_key
        among them), or a map ``{D·engage column: frame column}`` that sends those columns under
        D·engage's names and every other one under its own; by default the frame's columns of
        the standard import template. Any other frame column is a problem to fix, never
        dropped silently.

        D·engage's own defaults are ``insertIfNotExists=false`` and
        ``throwExceptionIfInvalidRecord=true`` (seed §5); crmframes always sends both, and
        defaults to inserting (an upsert: what the endpoint is named for) and to per-record
        errors (one bad record must not refuse the other 999 of a call)."""
        return DengageContacts(
            self, insert_if_not_exists, throw_exception_if_invalid_record, name_map(columns, "columns")
        )


@register
@dataclass(frozen=True, repr=False)
class DengageContacts(Target):
    """``POST /rest/bulk/contacts``."""

    example = Example("dengage_contacts.csv", {"insert_if_not_exists": True})

    connection: Dengage = field(compare=False)
    insert_if_not_exists: bool = True  # D·engage's default is false (seed §5): see Dengage.contacts
    throw_exception_if_invalid_record: bool = False  # D·engage's default is true (seed §5)
    columns: tuple[str, ...] | dict[str, str] | None = None

    name: ClassVar[str] = "dengage.contacts"
    limits: ClassVar[Limits] = Limits(
        max_bytes=None,
        max_records=1000,
        max_concurrent=1,
        min_interval=60.0,
        concurrency_scope="account",
        typical_job_seconds=1.0,
        sources={
            "max_records": DN_BULK,
            "min_interval": DN_BULK,
            "max_concurrent": DN_BULK,
            "typical_job_seconds": "[I] the call is synchronous",
        },
    )
    statuses: ClassVar[Statuses | None] = RESPONSE_CODES
    retry_words: ClassVar[frozenset[str]] = frozenset({"code 999"})  # UnexpectedError

    def __post_init__(self) -> None:
        for arg in ("insert_if_not_exists", "throw_exception_if_invalid_record"):
            if not isinstance(getattr(self, arg), bool):
                raise ConfigError(f"{arg} must be True or False; got {getattr(self, arg)!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "insert_if_not_exists": self.insert_if_not_exists,
            "throw_exception_if_invalid_record": self.throw_exception_if_invalid_record,
            "columns": self.columns,
        }

    path: ClassVar[str] = "/rest/bulk/contacts"

    def pairs(self, schema: pl.Schema) -> tuple[list[tuple[str, str]], list[Problem]]:
        """Each D·engage column sent with the frame column it comes from, and the problems."""
        problems: list[Problem] = []
        if isinstance(self.columns, dict):  # {D·engage column: frame column}; the rest by their own names
            problems += chk.unknown_fields(schema, list(self.columns.values()), "columns")
            renamed = {c: n for n, c in self.columns.items() if c in schema}
            pairs = [(renamed.get(c, c), c) for c in schema.names()]
            enabled = set(IMPORT_TEMPLATE) | set(self.columns)
        elif self.columns is not None:
            problems += chk.unknown_fields(schema, self.columns, "columns")
            pairs = [(c, c) for c in self.columns if c in schema]
            enabled = set(self.columns)
        else:
            pairs = [(c, c) for c in schema.names()]
            enabled = set(IMPORT_TEMPLATE)
        for name, c in pairs:
            if name not in enabled:
                problems.append(
                    Problem(
                        None,
                        c,
                        "unknown_column",
                        (
                            f"column {c!r} is not a column of D·engage's standard import template, and D·engage "
                            f"takes only the account's import-enabled columns (a record with another column "
                            f"fails).{did_you_mean(name, IMPORT_TEMPLATE)} If your account has it, list the columns "
                            f"to send: contacts(columns=[...]), or map it: contacts(columns={{'column': {c!r}}}); "
                            "otherwise drop it."
                        ),
                    )
                )
        return [(n, c) for n, c in pairs if n in enabled], problems

    def bind(self, schema: pl.Schema) -> Binding:
        pairs, problems = self.pairs(schema)
        source = dict(pairs)  # D·engage column → frame column
        names = [n for n, _ in pairs]
        if "contact_key" not in source:
            near = chk.find_column(schema, "contact_key")
            hint = (
                f" Column {near!r} looks like it: map it, contacts(columns={{'contact_key': {near!r}}})."
                if near
                else ""
            )
            problems.append(
                Problem(
                    None,
                    "contact_key",
                    "missing_column",
                    f"D·engage needs a 'contact_key' column (the unique contact ID) in every upsert.{hint}",
                )
            )
        if "new_contact_key" in source and self.insert_if_not_exists:
            problems.append(
                Problem(
                    None,
                    source["new_contact_key"],
                    "not_allowed",
                    (
                        "new_contact_key (renaming a contact) cannot be combined with insertIfNotExists=true "
                        "(seed §5): send it with contacts(insert_if_not_exists=False), or drop the column."
                    ),
                )
            )
        problems += chk.unsupported(schema, list(source.values()), allow_nested=False, vendor="D·engage")
        checks: list[Check] = []
        unique = None
        if "contact_key" in source:
            kc = source["contact_key"]
            key = pl.col(kc).cast(pl.String)
            checks.append(chk.not_null(kc, "contact_key"))
            checks.append(
                Check(kc, "empty_key", "contact_key is empty; fill it or drop the row.", key.str.strip_chars() == "")
            )
            unique = UniqueKey(kc, key, "contact_key")
        if "email" in source:
            checks += chk.emails(source["email"])
        for name, limit in MAX_CHARS.items():
            if name in source:
                checks.append(chk.max_chars(source[name], limit, name))
        if "contact_status" in source:
            status = pl.col(source["contact_status"])
            checks.append(
                Check(
                    source["contact_status"],
                    "invalid_value",
                    "contact_status must be 'A' (active) or 'P' (passive).",
                    ~status.cast(pl.String).is_in(["A", "P"]) & status.is_not_null(),
                )
            )
        cells: list[tuple[str, pl.Expr, Any]] = []
        for name, c in pairs:
            dtype = schema[c]
            if name == "contact_key":
                cells.append((name, pl.col(c).cast(pl.String), pl.String()))
            elif name in DATE_COLUMNS and isinstance(dtype, pl.Datetime):
                # a date column holds no time: write the date, and refuse a time that would be lost
                checks.append(
                    Check(
                        c,
                        "not_a_date",
                        f"{name} is a date in D·engage (yyyy-MM-dd, no time); this "
                        "value has a time of day. Keep the date: .dt.date().",
                        pl.col(c).dt.time() != pl.time(0),
                    )
                )
                cells.append((name, pl.col(c).dt.date(), pl.Date()))
            elif name in DATE_COLUMNS and isinstance(dtype, pl.String):
                checks.append(
                    Check(
                        c,
                        "invalid_date",
                        f"{name} must be a date 'yyyy-MM-dd'.",
                        ~pl.col(c).str.contains(r"^\d{4}-\d{2}-\d{2}$"),
                    )
                )
                cells.append((name, pl.col(c), dtype))
            else:
                cells.append((name, pl.col(c), dtype))
        checks += chk.finite(schema, list(source.values()))
        prefix = (
            '{"columns":' + json.dumps(names, separators=(",", ":"), ensure_ascii=False) + ',"contactDatas":['
        ).encode()
        suffix = (
            '],"insertIfNotExists":'
            + json.dumps(self.insert_if_not_exists)
            + ',"throwExceptionIfInvalidRecord":'
            + json.dumps(self.throw_exception_if_invalid_record)
            + "}"
        ).encode()
        encode = None
        if not problems:
            row = json_object(cells, DATES) + pl.lit(",")
            encode = lambda nulls: row  # noqa: E731  (D·engage takes explicit nulls [I])
        key_expr = unique.key if unique is not None else None
        sent = ", ".join(n if n == c else f"{n} ← {c}" for n, c in pairs)
        return Binding(
            self,
            tuple(problems),
            tuple(checks),
            unique,
            encode,
            Framing(prefix, suffix, trim=1),
            key_expr,
            (f"columns sent: {sent}",),
        )

    def accepted(self, reply: Reply) -> Submission:
        """Synchronous: the answer to the call is the whole report (CONTRACTS §5, §6).

        Two layouts are seen (``data.{inserted, updated, errors}`` and the same at the top
        level) and error elements as strings or objects. A row counts as written only when
        the answer names it in ``inserted`` or ``updated`` (``named``)."""
        doc = reply.json()
        code = member(doc, "code")
        state = f"code {code}"
        found = RESPONSE_CODES.classify(code)
        if code is not None and (found is None or found.means != DONE):
            return Submission(None, state, outcome=Outcome(None, "failed", state, message=str(member(doc, "message"))))
        data = member(doc, "data")
        if not isinstance(data, dict) or not any(
            member(data, w) is not None for w in ("inserted", "updated", "errors")
        ):
            data = doc
        lists = {w: member(data, w) or [] for w in ("inserted", "updated", "errors")}
        faults = [
            Fault(w, None, key=k, verdict="accepted")
            for w in ("inserted", "updated")
            for k in map(_written_key, lists[w])
            if k is not None
        ]
        faults += [_error(e) for e in lists["errors"]]
        imported = len(lists["inserted"]) + len(lists["updated"])
        return Submission(
            None,
            state,
            outcome=Outcome(
                None, "finished", "done", tuple(faults), Totals(imported, len(lists["errors"])), named=True
            ),
        )


KEY_NAMES = ("contact_key", "contactKey", "key")
TEXT_NAMES = ("message", "error", "errorMessage", "description", "reason")


def _written_key(item: Any) -> str | None:
    """An ``inserted`` / ``updated`` element: the contact_key, or an object holding it [I]."""
    if isinstance(item, dict):
        key = member(item, *KEY_NAMES)
        return None if key is None else str(key)
    return None if item is None else str(item)


def _error(item: Any) -> Fault:
    """An ``errors`` element: an object naming its contact_key, or a text. A text is tied to
    a row later, only when exactly one key sent appears in it as a word (``_report``)."""
    if isinstance(item, dict):
        key = member(item, *KEY_NAMES)
        text = member(item, *TEXT_NAMES)
        detail = str(text) if text is not None else json.dumps(item, ensure_ascii=False)
        return Fault("error", detail, key=None if key is None else str(key))
    return Fault("error", str(item))
