"""Dotdigital: the connection and its three bulk-import targets.

Contract and sources: shared/vendors/CONTRACTS.md §1–§3; request bodies are checked
against Dotdigital's OpenAPI documents in the tests.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Generator, Mapping, Sequence
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
from crmframes._encode import (
    ISO,
    DType,
    csv_cell,
    csv_header,
    csv_row,
    decimals_as_numbers,
    json_fields,
    json_object,
    strip_nulls,
)
from crmframes._errors import ConfigError, did_you_mean, one_of
from crmframes._flow import (
    DONE,
    FAILED,
    RUNNING,
    Fault,
    Flow,
    Outcome,
    Reply,
    Request,
    Status,
    StatusAnswer,
    Statuses,
    Step,
    Submission,
    Totals,
    as_int,
    call,
    member,
    poll,
    poll_intervals,
    still_running,
)
from crmframes._target import (
    Binding,
    Check,
    Example,
    Framing,
    Limits,
    Problem,
    Target,
    UniqueKey,
    as_names,
    check_column,
    check_deadline,
    name_map,
    register,
)

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
    "cartInsight",
    "catalog",
    "consentInsight",
    "custom",
    "easyEditorExtensions",
    "nostoEmailCampaigns",
    "orders",
    "productCategories",
    "webInsight",
    "wishList",
)
SCOPES = ("account", "contact")
IDENTITIES = ("email", "contactId", "mobileNumber")  # or a custom identifier name (DD-ID)
# v2 collection names: letters, digits and _, not starting with a digit, ≤ 255 (DD-WEB)
V2_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# v3 collection names: the DD-ID schema pattern (allows '-', at least two characters)
V3_COLLECTION = re.compile(r"^[-A-Za-z_][-A-Za-z0-9_]{1,254}$")
MAX_KEY = 255  # [I] keys are stored as strings; no documented limit, 255 matches names


# --- statuses: every documented word, what it means, and where it is written ----------------

SW = "DD-SW (the v2 swagger, tests/specs)"
WADL = "the v2 WADL from Dotdigital's servers (nigelm/DotMailer-API utils/wadl.xml @97b158c)"
M2 = "DD-M2 @6f341a1 (Dotdigital's Magento extension: Finished done, the other six failed)"

# GET /v2/contacts/import/{id} → ApiContactImportStatuses (CONTRACTS §3, §6)
CONTACT_IMPORT = Statuses(
    Status("Finished", DONE, f"{SW} ApiContactImportStatuses; {M2}"),
    Status("NotFinished", RUNNING, f"{SW}; {WADL}: the only word of a running import"),
    Status("RejectedByWatchdog", FAILED, f"{SW}; seed page get-contact-import-status (data-quality rejection); {M2}"),
    Status("InvalidFileFormat", FAILED, f"{SW}; seed page (not CSV or Excel); {M2}"),
    Status("Unknown", FAILED, f"{SW}; seed page (possibly a bad id); {M2}"),
    Status("Failed", FAILED, f"{SW}; seed page; {M2}"),
    Status("ExceedsAllowedContactLimit", FAILED, f"{SW}; seed page (the account's contact allowance); {M2}"),
    Status("NotAvailableInThisVersion", FAILED, f"{SW}; {WADL}; {M2}"),
)
# GET /v2/contacts/transactional-data/import/{id} → ApiTransactionalDataImportStatuses (CONTRACTS §1, §6)
TRANSACTIONAL_IMPORT = Statuses(
    Status("NotStarted", RUNNING, f"{SW} ApiTransactionalDataImportStatuses; seed page (accepted, not begun)"),
    Status("NotFinished", RUNNING, f"{SW}; seed page (started, not done)"),
    Status("Finished", DONE, f"{SW}; {WADL}"),
    Status("Failed", FAILED, f"{SW}; {WADL}"),
    Status("NotAvailableInThisVersion", FAILED, f"{SW}; {WADL}"),
)
# GET /insightData/v3/import/{id}: the spec's enum and its own examples disagree [C]; the
# SDK's test says completed: done words in any case (CONTRACTS §2, §6)
INSIGHT_IMPORT = Statuses(
    Status("NotStarted", RUNNING, "DD-ID import status enum and example"),
    Status("Processing", RUNNING, "DD-ID import status enum"),
    Status("NotFinished", RUNNING, "DD-ID async job status enum [I] for imports"),
    Status("Finished", DONE, "DD-ID examples; DD-M2"),
    Status("Complete", DONE, "DD-ID import status enum"),
    Status("Completed", DONE, "DD-PHP unit test (CONTRACTS §6)"),
    Status("Failed", FAILED, "DD-ID import status enum"),
    Status("NotAvailableInThisVersion", FAILED, "DD-ID async job status enum; CONTRACTS §6 [C]"),
)
# failed words after which sending the same rows again may work [I]; the others need a fix first
RETRY_WORDS = frozenset({"failed", "unknown", "notavailableinthisversion"})
# [I] no document gives a maximum import time; six hours of polling is far beyond a 50 MB
# import, and still ends a forgotten notebook's polling the same day (a target option)
POLL_DEADLINE = 6 * 3600.0


def _limits(max_concurrent: int | None, slug: str, extra: dict[str, str]) -> Limits:
    return Limits(
        max_bytes=MB50,
        max_records=None,
        max_concurrent=max_concurrent,
        min_interval=None,
        concurrency_scope="account",
        typical_job_seconds=30.0,
        sources={"max_bytes": DOCS + slug, "typical_job_seconds": "[I] estimate", **extra},
    )


@register_connection
class Dotdigital(Connection):
    """A Dotdigital API user. Credentials: arguments or DOTDIGITAL_USERNAME / _PASSWORD."""

    key = "dotdigital"
    vendor = "Dotdigital"
    timeout = 121.0  # Dotdigital asks clients to allow 121 s before timing out (CONTRACTS §1)

    def __init__(
        self,
        username: str | None = None,
        password: str | Secret | None = None,
        *,
        region: str | None = None,
        base_url: str | None = None,
    ) -> None:
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

    credential_vars = ("DOTDIGITAL_USERNAME", "DOTDIGITAL_PASSWORD")

    def check_credentials(self) -> None:
        self.auth()

    def account(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.username)}"

    def identity(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.username)}"  # the API user, not its password

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
            details = "; ".join(
                f"{d.get('item')}: {d.get('description')}" for d in doc.get("details") or [] if isinstance(d, dict)
            )
            return f"{doc['errorCode']} - {doc.get('description', '')}" + (f" ({details})" if details else "")
        return super().error_message(reply)

    def busy(self, reply: Reply) -> bool:
        """The 25-contact-imports (v2) and 5-insight-imports (v3) answers: the codes seen in
        clients (``ERROR_IMPORT_TOOMANYACTIVEIMPORTS``, v3 ``tooManyActiveImports``) or the
        seed's words ("too many active imports"; v3: "too many imports are being processed")."""
        text = reply.content.lower()
        return any(w in text for w in (b"toomanyactiveimports", b"too many active imports", b"too many imports"))

    def contacts(
        self,
        address_book_id: int,
        merge_option: str | int = "OnlyOverwriteIfNotEmpty",
        *,
        email: str | None = None,
        fields: Sequence[str] | Mapping[str, str] | None = None,
        upload: str = "multipart",
        poll_deadline: float = POLL_DEADLINE,
    ) -> DotdigitalContacts:
        """The CSV columns map to the account's contact data fields by name (case-insensitive).

        ``fields``: a list of the columns to send, or a map from data field to column
        (``{"FIRSTNAME": "first_name"}``) that sends those columns under the field's name and
        every other column under its own. ``poll_deadline``: vendor seconds of polling one
        import before it is reported pending."""
        return DotdigitalContacts(
            self, address_book_id, merge_option, email, name_map(fields, "fields"), upload, poll_deadline=poll_deadline
        )

    def transactional_data(
        self,
        collection: str,
        *,
        key: str,
        contact: str | None = None,
        scope: str = "contact",
        fields: Sequence[str] | None = None,
        poll_deadline: float = POLL_DEADLINE,
    ) -> DotdigitalTransactionalData:
        return DotdigitalTransactionalData(
            self, collection, key, contact, scope, as_names(fields, "fields"), poll_deadline
        )

    def insight_data(
        self,
        collection: str,
        *,
        scope: str,
        type: str,
        key: str,
        identity: str = "email",
        contact: str | None = None,
        fields: Sequence[str] | None = None,
        poll_deadline: float = POLL_DEADLINE,
    ) -> DotdigitalInsightData:
        return DotdigitalInsightData(
            self, collection, scope, type, key, identity, contact, as_names(fields, "fields"), poll_deadline
        )


# What a frame column's type can become in a Dotdigital data field of each type (ApiDataTypes).
# Strings are left to the vendor, which parses them; other types must fit.
_NUMERIC = (
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.UInt64,
    pl.Float32,
    pl.Float64,
    pl.Decimal,
)
_TEXT = (pl.String, pl.Categorical, pl.Enum, pl.Null)


def _fits(dtype: DType, field_type: str) -> bool:
    kind = field_type.casefold()
    if kind == "string" or isinstance(dtype, _TEXT):
        return True
    if kind == "numeric":
        return isinstance(dtype, _NUMERIC)
    if kind == "date":
        return isinstance(dtype, (pl.Date, pl.Datetime))
    if kind == "boolean":
        return isinstance(dtype, pl.Boolean)
    return True  # a type no document lists: let the vendor decide


def _free_fields(
    schema: pl.Schema, chosen: tuple[str, ...] | None, mapped: Sequence[str | None], argument: str = "fields"
) -> tuple[list[str], list[Problem]]:
    """Columns that go where the vendor takes free fields: given, or all not mapped."""
    if chosen is not None:
        return [f for f in chosen if f in schema], chk.unknown_fields(schema, chosen, argument)
    return [c for c in schema.names() if c not in mapped], []


def _check_collection(name: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(name, str) or not pattern.match(name):
        raise ConfigError(f"collection must be a collection name of {rule}; got {name!r}")
    return name


class _V2Import(Target):
    """v2 imports (contacts, transactional data) answer a submit with ``{id, status}``."""

    def accepted(self, reply: Reply) -> Submission:
        doc = reply.json()  # ApiContactImport / ApiTransactionalDataImport, in either case
        status = member(doc, "status")
        return Submission(str(member(doc, "id")), None if status is None else str(status))


# --- contacts import with merge option (v2, CSV) ---------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalContacts(_V2Import):
    """``POST /v2/address-books/{id}/contacts/import/with-merge-option/{mergeOption}``."""

    example = Example("contacts.csv", {"address_book_id": 1001, "merge_option": "OnlyOverwriteIfNotEmpty"})

    connection: Dotdigital = field(compare=False)
    address_book_id: int
    merge_option: str | int
    email: str | None = None
    fields: tuple[str, ...] | dict[str, str] | None = None
    upload: str = "multipart"
    boundary: str = field(default_factory=lambda: "crmframes-" + uuid.uuid4().hex)
    poll_deadline: float = POLL_DEADLINE

    name: ClassVar[str] = "dotdigital.contacts"
    statuses: ClassVar[Statuses | None] = CONTACT_IMPORT
    retry_words: ClassVar[frozenset[str]] = RETRY_WORDS
    limits: ClassVar[Limits] = _limits(
        25,
        "bulk-import-contacts-in-address-book-with-merge-option",
        {"max_concurrent": DOCS + "bulk-import-contacts-in-address-book-with-merge-option"},
    )

    def __post_init__(self) -> None:
        ab = self.address_book_id
        if isinstance(ab, bool) or not isinstance(ab, int) or not 0 < ab < 2**31:
            raise ConfigError(
                f"address_book_id must be a positive 32-bit integer (the address book's ID in Dotdigital); got {ab!r}"
            )
        object.__setattr__(self, "merge_option", _merge_option(self.merge_option))
        if self.upload not in ("multipart", "json"):
            raise ConfigError(one_of(self.upload, ("multipart", "json"), "upload"))
        check_column(self.email, "email")
        check_deadline(self.poll_deadline)

    def describe(self) -> dict[str, Any]:
        return {
            "address_book_id": self.address_book_id,
            "merge_option": self.merge_option,
            "email": self.email,
            "fields": self.fields,
            "upload": self.upload,
            "poll_deadline": self.poll_deadline,
        }

    @property
    def path(self) -> str:
        return f"/v2/address-books/{self.address_book_id}/contacts/import/with-merge-option/{self.merge_option}"

    def columns(self, schema: pl.Schema) -> tuple[str | None, list[tuple[str, str]], list[Problem]]:
        """The email column, each data column with the CSV header it is sent under (its data
        field's name), and the problems found resolving them."""
        email, problems = chk.resolve(schema, self.email, ["Email"], "the contact email", "email")
        if isinstance(self.fields, dict):
            problems += chk.unknown_fields(schema, list(self.fields.values()), "fields")
            renamed = {c: f for f, c in self.fields.items() if c in schema}
            pairs = [(renamed.get(c, c), c) for c in schema.names() if c != email]
        else:
            data, more = _free_fields(schema, self.fields, [email])
            problems += more
            pairs = [(c, c) for c in data]
        seen: dict[str, str] = {"email": "Email"}
        for header, column in pairs:
            if header.casefold() in seen:
                problems.append(
                    Problem(
                        None,
                        column,
                        "duplicate_column",
                        (
                            f"column {column!r} would be sent as {header!r}, a second {seen[header.casefold()]!r} column "
                            "(names are compared without case); drop or rename it."
                        ),
                    )
                )
            seen[header.casefold()] = header
        return email, pairs, problems

    def bind(self, schema: pl.Schema) -> Binding:
        email, pairs, problems = self.columns(schema)
        data = [c for _, c in pairs]
        problems += chk.unsupported(schema, data, allow_nested=False, vendor="a Dotdigital data field")
        checks: list[Check] = chk.finite(schema, data)
        unique = None
        if email is not None:
            checks = [chk.not_null(email, "the email"), *chk.emails(email), *checks]
            unique = UniqueKey(email, pl.col(email).cast(pl.String).str.to_lowercase(), "email address")
        encode = None
        if not problems:
            assert email is not None
            # a valid address holds no space, quote, comma or line break (chk.email), so its
            # cell never needs quoting; rows that fail the check are encoded but never sent
            address = pl.col(email).cast(pl.String).fill_null("")
            row = csv_row([address, *(csv_cell(pl.col(c), schema[c]) for c in data)])
            encode = lambda nulls: row  # noqa: E731  (CSV writes nulls as empty cells)
        head = csv_header(["Email", *(h for h, _ in pairs)]).encode()
        key = unique.key if unique is not None else None
        notes = ("data fields: " + (", ".join(h if h == c else f"{h} ← {c}" for h, c in pairs) or "(none)"),)
        return Binding(self, tuple(problems), tuple(checks), unique, encode, self._framing(head), key, notes)

    def account_checks(self, schema: pl.Schema) -> Flow:
        return _contacts_account(self, schema)

    def destination(self) -> str:
        return f"address_book={self.address_book_id}"

    def layout(self, binding: Binding) -> bytes:
        # the header names the fields each cell lands in, the merge option how it lands; the
        # multipart boundary changes per target and says nothing about the data
        return binding.framing.head + f"|{self.merge_option}".encode()

    def track(self, import_id: str, early: tuple[Any, ...], context: Any, sent: int = 0) -> Flow:
        return _contacts_track(import_id, self.poll_deadline)

    def _framing(self, head: bytes) -> Framing:
        filename = "contacts.csv"
        if self.upload == "json":  # ApiFileMedia: {"fileName", "data": base64}
            return Framing(f'{{"fileName":"{filename}","data":"'.encode(), b'"}', head=head, base64=True)
        b = self.boundary
        prefix = (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        return Framing(
            prefix, f"\r\n--{b}--\r\n".encode(), head=head, content_type=f"multipart/form-data; boundary={b}"
        )


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
    raise ConfigError(
        one_of(value, allowed, "merge_option") + " (0 = overwrite all fields, 1 = blank values don't overwrite, "
        "2 = only fill fields that are empty)"
    )


# --- transactional data (v2, JSON array) -----------------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalTransactionalData(_V2Import):
    """``POST /v2/contacts/transactional-data/import/{collectionName}``."""

    example = Example("orders.parquet", {"collection": "orders", "key": "order_id", "contact": "email"})

    connection: Dotdigital = field(compare=False)
    collection: str
    key: str
    contact: str | None = None
    scope: str = "contact"
    fields: tuple[str, ...] | None = None
    poll_deadline: float = POLL_DEADLINE

    name: ClassVar[str] = "dotdigital.transactional_data"
    statuses: ClassVar[Statuses | None] = TRANSACTIONAL_IMPORT
    retry_words: ClassVar[frozenset[str]] = RETRY_WORDS
    limits: ClassVar[Limits] = _limits(None, "bulk-add-transactional-data-to-contacts", {})

    def __post_init__(self) -> None:
        _check_collection(
            self.collection,
            V2_COLLECTION,
            "letters, digits and '_' only, not starting with a digit, at most 255 characters",
        )
        if self.scope not in SCOPES:
            raise ConfigError(one_of(self.scope, SCOPES, "scope"))
        if self.scope == "account" and self.contact is not None:
            raise ConfigError("scope='account' data belongs to no contact; drop contact=...")
        check_column(self.key, "key", optional=False)
        check_column(self.contact, "contact")
        check_deadline(self.poll_deadline)

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "key": self.key,
            "contact": self.contact,
            "scope": self.scope,
            "fields": self.fields,
            "poll_deadline": self.poll_deadline,
        }

    @property
    def path(self) -> str:
        return f"/v2/contacts/transactional-data/import/{self.collection}"

    def bind(self, schema: pl.Schema) -> Binding:
        return _bind_records(
            self,
            schema,
            self.key,
            self.scope,
            "email",
            self.contact,
            self.fields,
            self._encode,
            Framing(b"[", b"]", trim=1),
        )

    def track(self, import_id: str, early: tuple[Any, ...], context: Any, sent: int = 0) -> Flow:
        return _transactional_track(import_id, self.poll_deadline)

    def account_checks(self, schema: pl.Schema) -> Flow:
        return _transactional_account(self)

    def destination(self) -> str:
        return f"collection={self.collection}|scope={self.scope}"

    def _encode(
        self, key: str, contact: str | None, data: list[str], schema: pl.Schema, nulls: frozenset[str]
    ) -> pl.Expr:
        inner = strip_nulls(json_object([(c, pl.col(c), schema[c]) for c in data], ISO), data, schema, nulls)
        ident = pl.lit("account") if contact is None else pl.col(contact).cast(pl.String)
        # one encode of the record quotes the inner JSON as a string: no second pass to join
        record = pl.struct(
            pl.col(key).cast(pl.String).alias("key"), ident.alias("contactIdentifier"), inner.alias("json")
        )
        return record.struct.json_encode() + pl.lit(",")


# --- Insight data (v3, JSON envelope) -----------------------------------------------


@register
@dataclass(frozen=True, repr=False)
class DotdigitalInsightData(Target):
    """``PUT /insightData/v3/import``."""

    example = Example(
        "orders.parquet",
        {"collection": "orders_insight", "scope": "contact", "type": "orders", "key": "order_id", "identity": "email"},
    )

    connection: Dotdigital = field(compare=False)
    collection: str
    scope: str
    type: str
    key: str
    identity: str = "email"
    contact: str | None = None
    fields: tuple[str, ...] | None = None
    poll_deadline: float = POLL_DEADLINE

    name: ClassVar[str] = "dotdigital.insight_data"
    statuses: ClassVar[Statuses | None] = INSIGHT_IMPORT
    retry_words: ClassVar[frozenset[str]] = RETRY_WORDS
    limits: ClassVar[Limits] = _limits(5, "importinsightdata", {"max_concurrent": DOCS + "importinsightdata"})

    def __post_init__(self) -> None:
        _check_collection(
            self.collection, V3_COLLECTION, "2–255 characters: letters, digits, '-' and '_', not starting with a digit"
        )
        if self.scope not in SCOPES:
            raise ConfigError(one_of(self.scope, SCOPES, "scope"))
        canon = {t.lower(): t for t in INSIGHT_TYPES}
        if not isinstance(self.type, str) or self.type.lower() not in canon:
            raise ConfigError(one_of(self.type, INSIGHT_TYPES, "type"))
        object.__setattr__(self, "type", canon[self.type.lower()])
        if not isinstance(self.identity, str) or not self.identity.strip():
            raise ConfigError(
                f"identity must be one of {IDENTITIES} or a custom identifier name; got {self.identity!r}"
            )
        if self.scope == "account" and self.contact is not None:
            raise ConfigError("scope='account' records belong to no contact; drop contact=...")
        check_column(self.key, "key", optional=False)
        check_column(self.contact, "contact")
        check_deadline(self.poll_deadline)

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "scope": self.scope,
            "type": self.type,
            "key": self.key,
            "identity": self.identity,
            "contact": self.contact,
            "fields": self.fields,
            "poll_deadline": self.poll_deadline,
        }

    path: ClassVar[str] = "/insightData/v3/import"

    def bind(self, schema: pl.Schema) -> Binding:
        head = {"collectionName": self.collection, "collectionScope": self.scope, "collectionType": self.type}
        import json

        prefix = (json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1] + ',"records":[').encode()
        return _bind_records(
            self,
            schema,
            self.key,
            self.scope,
            self.identity,
            self.contact,
            self.fields,
            self._encode,
            Framing(prefix, b"]}", trim=1),
        )

    method: ClassVar[str] = "PUT"

    def accepted(self, reply: Reply) -> Submission:
        return Submission(str(member(reply.json(), "importId")), "NotStarted")  # 202 {importId}

    def track(self, import_id: str, early: tuple[Any, ...], context: Any, sent: int = 0) -> Flow:
        return _insight_track(self.path, import_id, self.poll_deadline)

    def account_checks(self, schema: pl.Schema) -> Flow:
        return _insight_account(self)

    def destination(self) -> str:
        return f"collection={self.collection}|scope={self.scope}|type={self.type}"

    def _encode(
        self, key: str, contact: str | None, data: list[str], schema: pl.Schema, nulls: frozenset[str]
    ) -> pl.Expr:
        record = [pl.col(key).cast(pl.String).alias("key")]
        if contact is not None:
            record.append(
                pl.struct(
                    pl.lit(self.identity).alias("identifier"), pl.col(contact).cast(pl.String).alias("value")
                ).alias("contactIdentity")
            )
        fields = json_fields([(c, pl.col(c), schema[c]) for c in data], ISO)
        if fields is None:  # no data columns: polars has no empty struct, so append the empty object
            return pl.struct(record).struct.json_encode().str.strip_suffix("}") + pl.lit(',"json":{}},')
        record.append(fields.alias("json"))
        # the record in one encode; only data members can be null (key and contact are checked)
        encoded = decimals_as_numbers(pl.struct(record).struct.json_encode(), (schema[c] for c in data))
        return strip_nulls(encoded, data, schema, nulls) + pl.lit(",")


def _bind_records(
    target: Target,
    schema: pl.Schema,
    key_arg: str,
    scope: str,
    identity: str,
    contact_arg: str | None,
    fields: tuple[str, ...] | None,
    encode: Any,
    framing: Framing,
) -> Binding:
    """Shared binding of the two keyed-record targets (v2 transactional, v3 insight)."""
    key, problems = chk.resolve(schema, key_arg, [key_arg], "the record key", "key")
    contact = None
    if scope == "contact":
        contact, more = chk.resolve(schema, contact_arg, [identity], f"the contact identifier ({identity})", "contact")
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
            checks += [
                Check(e.column, e.code, e.problem, e.invalid & ~is_id) for e in chk.emails(contact, "the contact email")
            ]
        elif identity == "mobileNumber":
            checks.append(
                Check(
                    contact,
                    "invalid_mobile",
                    "the mobile number must be digits with an optional leading '+'.",
                    ~pl.col(contact).cast(pl.String).str.contains(r"^\+?\d{6,15}$"),
                )
            )
    checks += chk.finite(schema, data)
    unique = UniqueKey(key, pl.col(key).cast(pl.String), "record key") if key is not None else None
    enc = None if problems else (lambda nulls: encode(key, contact, data, schema, nulls))
    return Binding(
        target, tuple(problems), tuple(checks), unique, enc, framing, unique.key if unique is not None else None
    )


def _nested_arrays(schema: pl.Schema, columns: list[str]) -> list[Problem]:
    """Dotdigital rejects arrays inside arrays (fault JsonContainsNestedArray)."""

    def has(dtype: DType, in_list: bool) -> bool:
        if isinstance(dtype, (pl.List, pl.Array)):
            return in_list or has(dtype.inner, True)
        if isinstance(dtype, pl.Struct):
            return any(has(f.dtype, False) for f in dtype.fields)
        return False

    return [
        Problem(
            None,
            c,
            "nested_array",
            f"column {c!r} ({schema[c]}) holds a list inside a list, which Dotdigital "
            "rejects (JsonContainsNestedArray); flatten the inner lists.",
        )
        for c in columns
        if has(schema[c], False)
    ]


def _reader(statuses: Statuses) -> Any:
    def read(doc: Any) -> StatusAnswer:
        word = member(doc, "status")
        word = None if word is None else str(word)
        found = statuses.classify(word)
        return StatusAnswer(word, None if found is None else found.means, None, doc)

    return read


# --- lifecycles (sans-I/O; driven by the engine) ----------------------------------------


def _failed(import_id: str, word: str | None) -> Outcome:
    return Outcome(import_id, "failed", word, message=f"Dotdigital ended the import with status {word}")


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
        out.append(Fault(reason=row[at_reason].strip(), key=email or None))
    return out


def _contacts_track(import_id: str, deadline: float) -> Flow:
    status = Request("GET", f"/v2/contacts/import/{import_id}", "poll")
    last, ended = yield from poll(status, _reader(CONTACT_IMPORT), poll_intervals(), deadline)
    if not ended or last is None:
        return still_running(import_id, last, deadline, "Dotdigital")
    if last.means == FAILED:
        return _failed(import_id, last.word)
    counts = (yield from call(Request("GET", f"/v2/contacts/import/{import_id}/report", "report"))).json()
    faults = yield from call(Request("GET", f"/v2/contacts/import/{import_id}/report-faults", "report"))
    new, updated = as_int(member(counts, "newContacts")), as_int(member(counts, "updatedContacts"))
    imported = None if new is None or updated is None else new + updated
    # the count categories overlap (suppressedContacts vs globallySuppressed) [I]: reconcile
    # on what was imported, and take rejections from the faults file
    return Outcome(import_id, "finished", last.word, tuple(contact_faults(faults.content)), Totals(imported, None))


def _transactional_track(import_id: str, deadline: float) -> Flow:
    base = f"/v2/contacts/transactional-data/import/{import_id}"
    last, ended = yield from poll(
        Request("GET", base, "poll"), _reader(TRANSACTIONAL_IMPORT), poll_intervals(), deadline
    )
    if not ended or last is None:
        return still_running(import_id, last, deadline, "Dotdigital")
    if last.means == FAILED:
        return _failed(import_id, last.word)
    report = (yield from call(Request("GET", base + "/report", "report"))).json()
    faults = tuple(_fault(f, "reason", "detail") for f in member(report, "faults") or [])
    return Outcome(
        import_id,
        "finished",
        last.word,
        faults,
        Totals(as_int(member(report, "totalImported")), as_int(member(report, "totalRejected"))),
    )


def _insight_track(path: str, import_id: str, deadline: float) -> Flow:
    last, ended = yield from poll(
        Request("GET", f"{path}/{import_id}", "poll"), _reader(INSIGHT_IMPORT), poll_intervals(), deadline
    )
    if not ended or last is None:
        return still_running(import_id, last, deadline, "Dotdigital")
    if last.means == FAILED:
        return _failed(import_id, last.word)
    doc = last.doc
    faults = tuple(_fault(f, "failureReason", "details") for f in member(doc, "failures") or [])
    summary = member(doc, "summary") or {}
    return Outcome(
        import_id,
        "finished",
        last.word,
        faults,
        Totals(as_int(member(summary, "totalImported")), as_int(member(summary, "totalRejected"))),
    )


def _fault(item: Any, reason: str, detail: str) -> Fault:
    """A report fault by key (v2 ``{key, reason, detail}``, v3 ``{key, failureReason, details[]}``)."""
    if not isinstance(item, dict):  # a shape no document shows: keep its words, tie it to no row
        return Fault("Unknown", str(item))
    why = member(item, detail)
    if isinstance(why, list):
        why = "; ".join(map(str, why)) or None
    key = member(item, "key")
    return Fault(
        str(member(item, reason) or "Unknown"), None if why is None else str(why), key=None if key is None else str(key)
    )


# --- preflight against the account (sans-I/O; cost: the calls below, cached a minute) -------------

ACCOUNT_CACHE = 60.0  # seconds an account's metadata is reused, so a loop of submits asks once


def _get(path: str, **params: str) -> Request:
    return Request("GET", path, "account", params=params, answered=frozenset({404}), cache=ACCOUNT_CACHE)


def _contacts_account(t: DotdigitalContacts, schema: pl.Schema) -> Generator[Step, Reply | None, list[Problem]]:
    """2 calls: ``GET /v2/address-books/{id}`` (404: no such book) and ``GET /v2/data-fields``;
    each column must land in a data field (the service drops the others silently, seed §3)
    whose type it fits."""
    problems = []
    book = yield from call(_get(f"/v2/address-books/{t.address_book_id}"))
    if book.status == 404:
        problems.append(
            Problem(
                None,
                None,
                "unknown_destination",
                (
                    f"Dotdigital has no address book {t.address_book_id} in this account (ERROR_ADDRESSBOOK_NOT_FOUND): "
                    "check address_book_id."
                ),
            )
        )
    reply = yield from call(_get("/v2/data-fields"))
    fields = {str(member(f, "name")).casefold(): f for f in reply.json() or [] if isinstance(f, dict)}
    names = [str(member(f, "name")) for f in fields.values()]
    _, pairs, _ = t.columns(schema)
    for header, column in pairs:
        found = fields.get(header.casefold())
        sent_as = "" if header == column else f" (sent as {header!r})"
        if found is None:
            problems.append(
                Problem(
                    None,
                    column,
                    "unmapped_column",
                    (
                        f"column {column!r}{sent_as} matches no contact data field of the account, so Dotdigital would "
                        f"drop its values without a word.{did_you_mean(header, names)} Map it to a field: "
                        f"contacts(..., fields={{'FIELD': {column!r}}}); create the field in Dotdigital; or drop the "
                        f"column. The account's fields: {', '.join(sorted(names)) or '(none)'}."
                    ),
                )
            )
            continue
        kind = str(member(found, "type") or "String")
        if not _fits(schema[column], kind):
            problems.append(
                Problem(
                    None,
                    column,
                    "type_mismatch",
                    (
                        f"column {column!r}{sent_as} is {schema[column]}, but the data field {member(found, 'name')!r} is "
                        f"{kind}: cast the column, or map it to a field of a fitting type."
                    ),
                )
            )
    return problems


def _transactional_account(t: DotdigitalTransactionalData) -> Generator[Step, Reply | None, list[Problem]]:
    """1 call, ``GET /v2/contacts/transactional-data-collections``: it proves the credentials
    (a collection the account lacks is created by the import [I])."""
    yield from call(_get("/v2/contacts/transactional-data-collections", select="1000", skip="0"))
    return []


def _insight_account(t: DotdigitalInsightData) -> Generator[Step, Reply | None, list[Problem]]:
    """1 call, ``GET /insightData/v3/collections``: an existing collection of another scope or
    type would refuse the records (a missing one is created, DD-ID)."""
    reply = yield from call(_get("/insightData/v3/collections"))
    for c in reply.json() or []:
        if str(member(c, "collectionName")) != t.collection:
            continue
        scope, kind = member(c, "collectionScope"), member(c, "collectionType")
        if (scope and str(scope).casefold() != t.scope) or (kind and str(kind).casefold() != t.type.casefold()):
            return [
                Problem(
                    None,
                    None,
                    "collection_conflict",
                    (
                        f"the account already has an Insight collection {t.collection!r} of scope {scope!r} and type "
                        f"{kind!r}; this target sends scope {t.scope!r}, type {t.type!r}. Use that scope and type, or "
                        "another collection name."
                    ),
                )
            ]
    return []
