"""D·engage: BulkUpsert of master contacts (synchronous, 1,000 records, once a minute).

Contract and sources: shared/vendors/CONTRACTS.md §5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from crmframes import _checks as chk
from crmframes._connection import Connection, Secret, clean_base_url, fingerprint, host, need, option, secret
from crmframes._encode import DateFormats, json_object
from crmframes._errors import ConfigError
from crmframes._flow import Fault, Outcome, Reply, Request, Submission, Totals
from crmframes._target import Binding, Check, Framing, Limits, Problem, Target, register

DN_BULK = "https://dev.dengage.com/reference/updatecontactsbulk"
HOSTS = {r: f"https://{r}-api.dengage.com" for r in ("tr", "us", "eu", "ru", "sa", "dev")}  # DN-SFCC
# D·engage's documented date formats include yyyy-MM-ddTHH:mm:ss.fff and a Z suffix (DN-DOCS)
DATES = DateFormats(naive="%Y-%m-%dT%H:%M:%S%.3f", aware="%Y-%m-%dT%H:%M:%S%.3fZ")
MAX_EMAIL_CHARS = 255  # DN-REF body params


class Dengage(Connection):
    """A D·engage API user. Credentials: arguments or DENGAGE_USER_KEY / DENGAGE_PASSWORD."""

    vendor = "D·engage"

    def __init__(self, user_key: str | Secret | None = None, password: str | Secret | None = None, *,
                 region: str | None = None, base_url: str | None = None) -> None:
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

    def account(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.user_key.reveal() if self.user_key else None)}"

    def login(self) -> Request:
        """``POST /rest/login`` (CONTRACTS §5); the body holds the password: never logged."""
        return Request("POST", "/rest/login", "login", json.dumps(self.login_body()).encode(),
                       "application/json", authenticated=False)

    def parse_login(self, reply: Reply) -> tuple[str, float]:
        doc = reply.json()
        return str(doc["access_token"]), float(doc.get("expires_in") or 3600)

    def auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def error_message(self, reply: Reply) -> str:
        if reply.status == 403 and not reply.content:
            return ("403 with an empty body: the API user lacks the DataSpace.Manage permission, or "
                    "this machine's IP is not on the account's API allow-list")
        try:
            doc = reply.json()
            return f"code {doc.get('code')}: {doc.get('message')}"
        except (ValueError, AttributeError):
            return super().error_message(reply)

    def contacts(self, *, insert_if_not_exists: bool = True, throw_exception_if_invalid_record: bool = False,
                 columns: Sequence[str] | None = None) -> DengageContacts:
        if isinstance(columns, str):
            raise ConfigError("columns is a list of column names, not a string")
        return DengageContacts(self, insert_if_not_exists, throw_exception_if_invalid_record,
                               None if columns is None else tuple(columns))


@register
@dataclass(frozen=True, repr=False)
class DengageContacts(Target):
    """``POST /rest/bulk/contacts``."""

    connection: Dengage = field(compare=False)
    insert_if_not_exists: bool = True  # [I] D·engage documents no default; upsert is the name
    throw_exception_if_invalid_record: bool = False  # per-record errors, not a failed call
    columns: tuple[str, ...] | None = None

    name: ClassVar[str] = "dengage.contacts"
    limits: ClassVar[Limits] = Limits(
        max_bytes=None, max_records=1000, max_concurrent=1, min_interval=60.0,
        concurrency_scope="account", typical_job_seconds=1.0,
        sources={"max_records": DN_BULK, "min_interval": DN_BULK, "max_concurrent": DN_BULK,
                 "typical_job_seconds": "[I] the call is synchronous"},
    )

    def __post_init__(self) -> None:
        for arg in ("insert_if_not_exists", "throw_exception_if_invalid_record"):
            if not isinstance(getattr(self, arg), bool):
                raise ConfigError(f"{arg} must be True or False; got {getattr(self, arg)!r}")

    def describe(self) -> dict[str, Any]:
        return {"insert_if_not_exists": self.insert_if_not_exists,
                "throw_exception_if_invalid_record": self.throw_exception_if_invalid_record,
                "columns": self.columns}

    path: ClassVar[str] = "/rest/bulk/contacts"

    def bind(self, schema: pl.Schema) -> Binding:
        problems: list[Problem] = []
        if self.columns is not None:
            problems += chk.unknown_fields(schema, self.columns, "columns")
            cols = [c for c in self.columns if c in schema]
        else:
            cols = schema.names()
        if "contact_key" not in cols:
            near = chk.find_column(schema, "contact_key")
            hint = f" Column {near!r} looks like it: rename it to 'contact_key'." if near else ""
            problems.append(Problem(None, "contact_key", "missing_column",
                                    "D·engage needs a 'contact_key' column (the unique contact ID) "
                                    f"in every upsert.{hint}"))
        problems += chk.unsupported(schema, cols, allow_nested=False, vendor="D·engage")
        checks: list[Check] = []
        if "contact_key" in schema:
            checks.append(chk.not_null("contact_key", "contact_key"))
        if "email" in cols:
            checks += [chk.email("email"), chk.max_chars("email", MAX_EMAIL_CHARS, "email")]
        if "contact_status" in cols:
            checks.append(Check("contact_status", "invalid_value",
                                "contact_status must be 'A' (active) or 'P' (passive).",
                                ~pl.col("contact_status").cast(pl.String).is_in(["A", "P"])
                                & pl.col("contact_status").is_not_null()))
        if "birth_date" in cols and isinstance(schema["birth_date"], pl.String):
            checks.append(Check("birth_date", "invalid_date", "birth_date must be a date 'yyyy-MM-dd'.",
                                ~pl.col("birth_date").str.contains(r"^\d{4}-\d{2}-\d{2}$")))
        checks += chk.finite(schema, cols)
        prefix = ('{"columns":' + json.dumps(cols, separators=(",", ":"), ensure_ascii=False)
                  + ',"contactDatas":[').encode()
        suffix = ('],"insertIfNotExists":' + json.dumps(self.insert_if_not_exists)
                  + ',"throwExceptionIfInvalidRecord":' + json.dumps(self.throw_exception_if_invalid_record)
                  + "}").encode()
        encode = None
        if not problems:
            cells = [(c, pl.col(c).cast(pl.String), pl.String()) if c == "contact_key"
                     else (c, pl.col(c), schema[c]) for c in cols]
            row = json_object(cells, DATES) + pl.lit(",")
            encode = lambda nulls: row  # noqa: E731  (D·engage takes explicit nulls [I])
        key = pl.col("contact_key").cast(pl.String) if "contact_key" in schema else None
        return Binding(self, tuple(problems), tuple(checks), None, encode, Framing(prefix, suffix, trim=1), key)

    def accepted(self, reply: Reply) -> Submission:
        """Synchronous: the answer to the call is the whole report (CONTRACTS §5)."""
        doc = reply.json()
        state = f"code {doc.get('code')}"
        if doc.get("code") not in (0, None):
            return Submission(None, state, outcome=Outcome(None, "failed", state, message=str(doc.get("message"))))
        data = doc.get("data") or {}
        faults = tuple(Fault("error", str(m), key=error_key(m)) for m in data.get("errors") or [])
        imported = len(data.get("inserted") or []) + len(data.get("updated") or [])
        return Submission(None, state, outcome=Outcome(None, "finished", "done", faults,
                                                       Totals(imported, len(faults), data)))


def error_key(message: str) -> str | None:
    """The contact_key an ``errors`` entry is about. [I] Element shapes are undocumented; the
    sandbox (and D·engage's pre-sales code) write "<contact_key>: <problem>"."""
    key, sep, _ = str(message).partition(": ")
    return key if sep else None
