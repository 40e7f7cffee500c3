"""Dotdigital: the connection and its three bulk-import targets.

Contract and sources: shared/vendors/CONTRACTS.md §1–§3; request bodies are checked
against Dotdigital's OpenAPI documents in the tests.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from crmframes import _checks as chk
from crmframes._connection import Connection, Secret, clean_base_url, fingerprint, host, need, option, secret
from crmframes._encode import (
    ISO,
    DType,
    csv_cell,
    csv_header,
    csv_row,
    json_fields,
    json_object,
    strip_nulls,
)
from crmframes._errors import ConfigError, one_of
from crmframes._flow import (
    Fault,
    Flow,
    Outcome,
    Reply,
    Request,
    Step,
    Submission,
    Totals,
    call,
    note,
    pause,
    poll_intervals,
)
from crmframes._target import Binding, Check, Framing, Limits, Problem, Target, UniqueKey, register

DOCS = "https://developer.dotdigital.com/reference/"
HOSTS = {  # DD-TD servers; DD-WEB:api-endpoints
    "r1": "https://r1-api.dotdigital.com",
    "r2": "https://r2-api.dotdigital.com",
    "r3": "https://r3-api.dotdigital.com",
}
MB50 = 50_000_000  # "50 MB"; the decimal reading is the smaller, so the safe one [I]

MERGE_OPTIONS = {  # DD-SW enum names; DD-AB documents the same as "0" | "1" | "2"
    "Overwrite": 0,
    "OnlyOverwriteIfNotEmpty": 1,
    "OnlyOverwriteIfContactDataNotPopulated": 2,
}
INSIGHT_TYPES = (  # DD-ID collectionType enum
    "cartInsight", "catalog", "consentInsight", "custom", "easyEditorExtensions",
    "nostoEmailCampaigns", "orders", "productCategories", "webInsight", "wishList",
)
SCOPES = ("account", "contact")
IDENTITIES = ("email", "contactId", "mobileNumber")  # or a custom identifier name (DD-ID)
# v2 collection names: letters, digits and _, not starting with a digit, ≤ 255 (DD-WEB)
V2_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# v3 collection names: the DD-ID schema pattern (allows '-', at least two characters)
V3_COLLECTION = re.compile(r"^[-A-Za-z_][-A-Za-z0-9_]{1,254}$")
MAX_KEY = 255  # [I] keys are stored as strings; no documented limit, 255 matches names


def _limits(max_concurrent: int | None, slug: str, extra: dict[str, str]) -> Limits:
    return Limits(
        max_bytes=MB50, max_records=None, max_concurrent=max_concurrent, min_interval=None,
        concurrency_scope="account", typical_job_seconds=30.0,
        sources={"max_bytes": DOCS + slug, "typical_job_seconds": "[I] estimate", **extra},
    )


class Dotdigital(Connection):
    """A Dotdigital API user. Credentials: arguments or DOTDIGITAL_USERNAME / _PASSWORD."""

    vendor = "Dotdigital"

    def __init__(self, username: str | None = None, password: str | Secret | None = None, *,
                 region: str | None = None, base_url: str | None = None) -> None:
        self.username = option(username, "DOTDIGITAL_USERNAME")
        self.password = secret(password, "DOTDIGITAL_PASSWORD")
        self.region = option(region, "DOTDIGITAL_REGION", "r1") or "r1"
        url = option(base_url, "DOTDIGITAL_BASE_URL")
        self.base_url = clean_base_url(url) if url else host(self.region, HOSTS, "region", "DOTDIGITAL_REGION")

    def __repr__(self) -> str:
        creds = "set" if self.username and self.password else "missing"
        return f"Dotdigital(username={self.username!r}, password=***, region={self.region!r}, base_url={self.base_url!r}, credentials={creds})"

    def auth(self) -> tuple[str, str]:
        """HTTP Basic credentials for the engine; raises when they are missing."""
        need(self.username, "username", "DOTDIGITAL_USERNAME", self.vendor)
        need(self.password, "password", "DOTDIGITAL_PASSWORD", self.vendor)
        assert self.username is not None and self.password is not None
        return self.username, self.password.reveal()

    def account(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.username)}"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        import base64

        raw = ":".join(self.auth()).encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii"), "Accept": "application/json"}

    def error_message(self, reply: Reply) -> str:
        """v2 answers ``{"message"}``; v3 ``{"errorCode", "description", "details"}`` (CONTRACTS §1–§3)."""
        try:
            doc = reply.json()
        except ValueError:
            return super().error_message(reply)
        if isinstance(doc, dict) and "message" in doc:
            return str(doc["message"])
        if isinstance(doc, dict) and "errorCode" in doc:
            details = "; ".join(f"{d.get('item')}: {d.get('description')}" for d in doc.get("details") or []
                                if isinstance(d, dict))
            return f"{doc['errorCode']} - {doc.get('description', '')}" + (f" ({details})" if details else "")
        return super().error_message(reply)

    def busy(self, reply: Reply) -> bool:
        """The 25-contact-imports (v2) and 5-insight-imports (v3) answers."""
        return b"TOOMANYACTIVEIMPORTS" in reply.content or b"tooManyActiveImports" in reply.content

    def contacts(self, address_book_id: int, merge_option: str | int = "OnlyOverwriteIfNotEmpty", *,
                 email: str | None = None, fields: Sequence[str] | None = None,
                 upload: str = "multipart") -> DotdigitalContacts:
        return DotdigitalContacts(self, address_book_id, merge_option, email, _tuple(fields), upload)

    def transactional_data(self, collection: str, *, key: str, contact: str | None = None,
                           scope: str = "contact", fields: Sequence[str] | None = None) -> DotdigitalTransactionalData:
        return DotdigitalTransactionalData(self, collection, key, contact, scope, _tuple(fields))

    def insight_data(self, collection: str, *, scope: str, type: str, key: str,
                     identity: str = "email", contact: str | None = None,
                     fields: Sequence[str] | None = None) -> DotdigitalInsightData:
        return DotdigitalInsightData(self, collection, scope, type, key, identity, contact, _tuple(fields))


def _tuple(fields: Sequence[str] | None) -> tuple[str, ...] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise ConfigError(f"fields must be a list of column names, not a string; got {fields!r}")
    return tuple(fields)


def _free_fields(schema: pl.Schema, chosen: tuple[str, ...] | None, mapped: Sequence[str | None],
                 argument: str = "fields") -> tuple[list[str], list[Problem]]:
    """Columns that go where the vendor takes free fields: given, or all not mapped."""
    if chosen is not None:
        return [f for f in chosen if f in schema], chk.unknown_fields(schema, chosen, argument)
    return [c for c in schema.names() if c not in mapped], []


def _check_collection(name: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(name, str) or not pattern.match(name):
        raise ConfigError(f"collection name {name!r} is not allowed: {rule}.")
    return name


class _V2Import(Target):
    """v2 imports (contacts, transactional data) answer a submit with ``{id, status}``."""

    def accepted(self, reply: Reply) -> Submission:
        doc = reply.json()  # ApiContactImport / ApiTransactionalDataImport
        return Submission(str(doc["id"]), doc.get("status"))


# --- contacts import with merge option (v2, CSV) ---------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalContacts(_V2Import):
    """``POST /v2/address-books/{id}/contacts/import/with-merge-option/{mergeOption}``."""

    connection: Dotdigital = field(compare=False)
    address_book_id: int
    merge_option: str | int
    email: str | None = None
    fields: tuple[str, ...] | None = None
    upload: str = "multipart"
    boundary: str = field(default_factory=lambda: "crmframes-" + uuid.uuid4().hex)

    name: ClassVar[str] = "dotdigital.contacts"
    limits: ClassVar[Limits] = _limits(
        25, "bulk-import-contacts-in-address-book-with-merge-option",
        {"max_concurrent": DOCS + "bulk-import-contacts-in-address-book-with-merge-option"},
    )

    def __post_init__(self) -> None:
        ab = self.address_book_id
        if isinstance(ab, bool) or not isinstance(ab, int) or not 0 < ab < 2**31:
            raise ConfigError(f"address_book_id must be a positive 32-bit integer (the address "
                              f"book's ID in Dotdigital); got {ab!r}")
        object.__setattr__(self, "merge_option", _merge_option(self.merge_option))
        if self.upload not in ("multipart", "json"):
            raise ConfigError(one_of(self.upload, ("multipart", "json"), "upload"))

    def describe(self) -> dict[str, Any]:
        return {"address_book_id": self.address_book_id, "merge_option": self.merge_option,
                "email": self.email, "fields": self.fields, "upload": self.upload}

    @property
    def path(self) -> str:
        return f"/v2/address-books/{self.address_book_id}/contacts/import/with-merge-option/{self.merge_option}"

    def bind(self, schema: pl.Schema) -> Binding:
        email, problems = chk.resolve(schema, self.email, ["Email"], "the contact email", "email")
        data, more = _free_fields(schema, self.fields, [email])
        problems += more
        problems += chk.unsupported(schema, data, allow_nested=False, vendor="a Dotdigital data field")
        clashes = [d for d in data if d.lower() == "email"]
        for d in clashes:
            problems.append(Problem(None, d, "duplicate_column",
                                    f"column {d!r} would be a second Email column; drop or rename it."))
        checks: list[Check] = chk.finite(schema, data)
        unique = None
        if email is not None:
            checks = [chk.not_null(email, "the email"), chk.email(email), *checks]
            unique = UniqueKey(email, pl.col(email).cast(pl.String).str.to_lowercase(), "email address")
        encode = None
        if not problems:
            assert email is not None
            # a valid address holds no space, quote, comma or line break (chk.email), so its
            # cell never needs quoting; rows that fail the check are encoded but never sent
            address = pl.col(email).cast(pl.String).fill_null("")
            row = csv_row([address, *(csv_cell(pl.col(c), schema[c]) for c in data)])
            encode = lambda nulls: row  # noqa: E731  (CSV writes nulls as empty cells)
        head = csv_header(["Email", *data]).encode()
        key = unique.key if unique is not None else None
        return Binding(self, tuple(problems), tuple(checks), unique, encode, self._framing(head), key)

    def track(self, import_id: str, early: tuple[Any, ...], context: Any) -> Flow:
        return _contacts_track(import_id)

    def _framing(self, head: bytes) -> Framing:
        filename = "contacts.csv"
        if self.upload == "json":  # ApiFileMedia: {"fileName", "data": base64}
            return Framing(f'{{"fileName":"{filename}","data":"'.encode(), b'"}', head=head, base64=True)
        b = self.boundary
        prefix = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                  "Content-Type: text/csv\r\n\r\n").encode()
        return Framing(prefix, f"\r\n--{b}--\r\n".encode(), head=head,
                       content_type=f"multipart/form-data; boundary={b}")


def _merge_option(value: object) -> str:
    by_number = {str(n): name for name, n in MERGE_OPTIONS.items()}
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in by_number:
        return by_number[str(value)]
    if isinstance(value, str):
        if value in by_number:
            return by_number[value]
        for name in MERGE_OPTIONS:
            if name.lower() == value.lower():
                return name
    allowed = [*MERGE_OPTIONS, 0, 1, 2]
    raise ConfigError(one_of(value, allowed, "merge_option") +
                      " (0 = overwrite all fields, 1 = blank values don't overwrite, "
                      "2 = only fill fields that are empty)")


# --- transactional data (v2, JSON array) -----------------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalTransactionalData(_V2Import):
    """``POST /v2/contacts/transactional-data/import/{collectionName}``."""

    connection: Dotdigital = field(compare=False)
    collection: str
    key: str
    contact: str | None = None
    scope: str = "contact"
    fields: tuple[str, ...] | None = None

    name: ClassVar[str] = "dotdigital.transactional_data"
    limits: ClassVar[Limits] = _limits(None, "bulk-add-transactional-data-to-contacts", {})

    def __post_init__(self) -> None:
        _check_collection(self.collection, V2_COLLECTION,
                          "letters, digits and '_' only, not starting with a digit, at most 255 characters")
        if self.scope not in SCOPES:
            raise ConfigError(one_of(self.scope, SCOPES, "scope"))
        if self.scope == "account" and self.contact is not None:
            raise ConfigError("scope='account' data belongs to no contact; drop contact=...")
        if not isinstance(self.key, str):
            raise ConfigError(f"key must name the column holding each record's key; got {self.key!r}")

    def describe(self) -> dict[str, Any]:
        return {"collection": self.collection, "key": self.key, "contact": self.contact,
                "scope": self.scope, "fields": self.fields}

    @property
    def path(self) -> str:
        return f"/v2/contacts/transactional-data/import/{self.collection}"

    def bind(self, schema: pl.Schema) -> Binding:
        return _bind_records(self, schema, self.key, self.scope, "email", self.contact, self.fields,
                             self._encode, Framing(b"[", b"]", trim=1))

    def track(self, import_id: str, early: tuple[Any, ...], context: Any) -> Flow:
        return _transactional_track(import_id)

    def _encode(self, key: str, contact: str | None, data: list[str], schema: pl.Schema,
                nulls: frozenset[str]) -> pl.Expr:
        inner = strip_nulls(json_object([(c, pl.col(c), schema[c]) for c in data], ISO), data, schema, nulls)
        ident = pl.lit("account") if contact is None else pl.col(contact).cast(pl.String)
        # one encode of the record quotes the inner JSON as a string: no second pass to join
        record = pl.struct(pl.col(key).cast(pl.String).alias("key"), ident.alias("contactIdentifier"),
                           inner.alias("json"))
        return record.struct.json_encode() + pl.lit(",")


# --- Insight data (v3, JSON envelope) -----------------------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalInsightData(Target):
    """``PUT /insightData/v3/import``."""

    connection: Dotdigital = field(compare=False)
    collection: str
    scope: str
    type: str
    key: str
    identity: str = "email"
    contact: str | None = None
    fields: tuple[str, ...] | None = None

    name: ClassVar[str] = "dotdigital.insight_data"
    limits: ClassVar[Limits] = _limits(5, "importinsightdata", {"max_concurrent": DOCS + "importinsightdata"})

    def __post_init__(self) -> None:
        _check_collection(self.collection, V3_COLLECTION,
                          "2–255 characters: letters, digits, '-' and '_', not starting with a digit")
        if self.scope not in SCOPES:
            raise ConfigError(one_of(self.scope, SCOPES, "scope"))
        canon = {t.lower(): t for t in INSIGHT_TYPES}
        if not isinstance(self.type, str) or self.type.lower() not in canon:
            raise ConfigError(one_of(self.type, INSIGHT_TYPES, "type"))
        object.__setattr__(self, "type", canon[self.type.lower()])
        if not isinstance(self.identity, str) or not self.identity.strip():
            raise ConfigError(f"identity must be one of {IDENTITIES} or a custom identifier name; got {self.identity!r}")
        if self.scope == "account" and self.contact is not None:
            raise ConfigError("scope='account' records belong to no contact; drop contact=...")

    def describe(self) -> dict[str, Any]:
        return {"collection": self.collection, "scope": self.scope, "type": self.type, "key": self.key,
                "identity": self.identity, "contact": self.contact, "fields": self.fields}

    path: ClassVar[str] = "/insightData/v3/import"

    def bind(self, schema: pl.Schema) -> Binding:
        head = {"collectionName": self.collection, "collectionScope": self.scope,
                "collectionType": self.type}
        import json

        prefix = (json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1] + ',"records":[').encode()
        return _bind_records(self, schema, self.key, self.scope, self.identity, self.contact, self.fields,
                             self._encode, Framing(prefix, b"]}", trim=1))

    method: ClassVar[str] = "PUT"

    def accepted(self, reply: Reply) -> Submission:
        return Submission(str(reply.json()["importId"]), "NotStarted")  # 202 {importId}

    def track(self, import_id: str, early: tuple[Any, ...], context: Any) -> Flow:
        return _insight_track(self.path, import_id)

    def _encode(self, key: str, contact: str | None, data: list[str], schema: pl.Schema,
                nulls: frozenset[str]) -> pl.Expr:
        record = [pl.col(key).cast(pl.String).alias("key")]
        if contact is not None:
            record.append(pl.struct(pl.lit(self.identity).alias("identifier"),
                                    pl.col(contact).cast(pl.String).alias("value")).alias("contactIdentity"))
        fields = json_fields([(c, pl.col(c), schema[c]) for c in data], ISO)
        if fields is None:  # no data columns: polars has no empty struct, so append the empty object
            return pl.struct(record).struct.json_encode().str.strip_suffix("}") + pl.lit(',"json":{}},')
        record.append(fields.alias("json"))
        # the record in one encode; only data members can be null (key and contact are checked)
        return strip_nulls(pl.struct(record).struct.json_encode(), data, schema, nulls) + pl.lit(",")


def _bind_records(target: Target, schema: pl.Schema, key_arg: str, scope: str, identity: str,
                  contact_arg: str | None, fields: tuple[str, ...] | None, encode: Any,
                  framing: Framing) -> Binding:
    """Shared binding of the two keyed-record targets (v2 transactional, v3 insight)."""
    key, problems = chk.resolve(schema, key_arg, [key_arg], "the record key", "key")
    contact = None
    if scope == "contact":
        contact, more = chk.resolve(schema, contact_arg, [identity],
                                    f"the contact identifier ({identity})", "contact")
        problems += more
    data, more = _free_fields(schema, fields, [key, contact])
    problems += more
    problems += chk.unsupported(schema, data, allow_nested=True, vendor="Dotdigital")
    problems += _nested_arrays(schema, data)
    checks: list[Check] = []
    if key is not None:
        checks += [chk.not_null(key, "the record key"), chk.max_chars(key, MAX_KEY, "the record key")]
    if contact is not None:
        checks.append(chk.not_null(contact, "the contact identifier"))
        if identity == "email":
            # v2 accepts an email or a numeric contact ID in the same field (DD-TD)
            is_id = pl.col(contact).cast(pl.String).str.contains(r"^\d+$")
            e = chk.email(contact, "the contact email")
            checks.append(Check(e.column, e.code, e.problem, e.invalid & ~is_id))
        elif identity == "mobileNumber":
            checks.append(Check(contact, "invalid_mobile",
                                "the mobile number must be digits with an optional leading '+'.",
                                ~pl.col(contact).cast(pl.String).str.contains(r"^\+?\d{6,15}$")))
    checks += chk.finite(schema, data)
    unique = UniqueKey(key, pl.col(key).cast(pl.String), "record key") if key is not None else None
    enc = None if problems else (lambda nulls: encode(key, contact, data, schema, nulls))
    return Binding(target, tuple(problems), tuple(checks), unique, enc, framing,
                   unique.key if unique is not None else None)


def _nested_arrays(schema: pl.Schema, columns: list[str]) -> list[Problem]:
    """Dotdigital rejects arrays inside arrays (fault JsonContainsNestedArray)."""

    def has(dtype: DType, in_list: bool) -> bool:
        if isinstance(dtype, (pl.List, pl.Array)):
            return in_list or has(dtype.inner, True)
        if isinstance(dtype, pl.Struct):
            return any(has(f.dtype, False) for f in dtype.fields)
        return False

    return [Problem(None, c, "nested_array",
                    f"column {c!r} ({schema[c]}) holds a list inside a list, which Dotdigital "
                    "rejects (JsonContainsNestedArray); flatten the inner lists.")
            for c in columns if has(schema[c], False)]


# --- lifecycles (sans-I/O; driven by the engine) ----------------------------------------

V2_DONE, V2_FAILED = ("Finished",), ("Failed", "NotAvailableInThisVersion")
# the v3 spec says Complete, its examples Finished: both mean done [C]
V3_DONE, V3_FAILED = ("Finished", "Complete"), ("Failed",)


def _poll(path: str, done: tuple[str, ...],
          failed: tuple[str, ...]) -> Generator[Step, Reply | None, tuple[str, dict[str, Any]]]:
    """Poll a status URL on Dotdigital's 5–30 s schedule until the import ends (which frees
    its slot at once: the reports are fetched after)."""
    for wait in poll_intervals():
        yield from pause(wait, "poll")
        doc = (yield from call(Request("GET", path, "poll"))).json()
        state = str(doc.get("status"))
        yield from note("polled", vendor_state=state)
        if state in done or state in failed:
            yield from note("vendor_done", vendor_state=state)
            return state, doc
    raise AssertionError("unreachable")  # pragma: no cover


def _failed(import_id: str, state: str) -> Outcome:
    return Outcome(import_id, "failed", state, message=f"Dotdigital reports the import {state}")


def contact_faults(content: bytes) -> list[Fault]:
    """The report-faults CSV: ``Reason`` then the import's columns (BOM, any header case)."""
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
    if not rows:
        return []
    lower = [h.strip().lower() for h in rows[0]]
    at_reason = lower.index("reason") if "reason" in lower else 0
    at_email = lower.index("email") if "email" in lower else None
    out = []
    for row in rows[1:]:
        if not row:
            continue
        email = row[at_email].strip().lower() if at_email is not None and at_email < len(row) else None
        out.append(Fault(reason=row[at_reason], key=email))
    return out


def _contacts_track(import_id: str) -> Flow:
    state, _ = yield from _poll(f"/v2/contacts/import/{import_id}", V2_DONE, V2_FAILED)
    if state not in V2_DONE:
        return _failed(import_id, state)
    counts = (yield from call(Request("GET", f"/v2/contacts/import/{import_id}/report", "report"))).json()
    faults = yield from call(Request("GET", f"/v2/contacts/import/{import_id}/report-faults", "report"))
    imported = int(counts.get("newContacts", 0)) + int(counts.get("updatedContacts", 0))
    # the count categories overlap (suppressedContacts vs globallySuppressed) [I]: reconcile
    # on what was imported, and take rejections from the faults file
    return Outcome(import_id, "finished", state, tuple(contact_faults(faults.content)),
                   Totals(imported, None, counts))


def _transactional_track(import_id: str) -> Flow:
    base = f"/v2/contacts/transactional-data/import/{import_id}"
    state, _ = yield from _poll(base, V2_DONE, V2_FAILED)
    if state not in V2_DONE:
        return _failed(import_id, state)
    report = (yield from call(Request("GET", base + "/report", "report"))).json()
    faults = tuple(Fault(str(f.get("reason")), f.get("detail"), key=str(f.get("key")))
                   for f in report.get("faults") or [])
    return Outcome(import_id, "finished", state, faults,
                   Totals(report.get("totalImported"), report.get("totalRejected"), report))


def _insight_track(path: str, import_id: str) -> Flow:
    state, doc = yield from _poll(f"{path}/{import_id}", V3_DONE, V3_FAILED)
    if state not in V3_DONE:
        return _failed(import_id, state)
    faults = tuple(Fault(str(f.get("failureReason")), "; ".join(map(str, f.get("details") or [])) or None,
                         key=str(f.get("key")))
                   for f in doc.get("failures") or [])
    summary = doc.get("summary") or {}
    return Outcome(import_id, "finished", state, faults,
                   Totals(summary.get("totalImported"), summary.get("totalRejected"), summary))
