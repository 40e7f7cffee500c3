"""Qualtrics XM Directory: transaction contacts import into a mailing list.

Contract and sources: shared/vendors/CONTRACTS.md §4.
"""

from __future__ import annotations

import json
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
    need,
    option,
    register_connection,
    secret,
)
from crmframes._encode import ISO, csv_text, strip_keys
from crmframes._errors import ConfigError, one_of
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
    as_percent,
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
    as_names,
    check_deadline,
    name_map,
    register,
)

QX_CREATE = "https://api.qualtrics.com/bab13356ac724-create-transaction-contacts-import"
# The contact keys of a transaction contacts import, as the seed and the client generated
# from Qualtrics' OpenAPI (wtx-labs/qualtrics-api-client-java) list them (CONTRACTS §6);
# embeddedData and transactionData are built from the other columns.
STANDARD = ("firstName", "lastName", "email", "extRef", "language", "unsubscribed")
IDENTIFIERS = ("email", "extRef")
# columns that look like contact keys of other Qualtrics calls but are not keys here: they go
# in embeddedData, and the plan says so
LOOKALIKES = ("phone", "phoneNumber", "mobile")
MAX_EMBEDDED_NAME = 200  # QX-SUP (UI doc; applying it to the API is [I])
MAX_EMBEDDED_VALUE = 1024  # QX-SUP
# Qualtrics creates the batch id at submit time; plans reserve this many bytes for it [I].
BATCH_ID_RESERVED = 40
BATCH_PLACEHOLDER = "BT_" + "0" * (BATCH_ID_RESERVED - 3)

# No document enumerates the import's status words (CONTRACTS §4, §6); done is also
# percentComplete >= 100, whatever the word (QX-BJ stops on it). Unknown words keep polling.
IMPORT_STATUSES = Statuses(
    Status("in progress", RUNNING, "[S] mavenlink/qualtrics_api fixture @33821a9"),
    Status("inProgress", RUNNING, "[I] Qualtrics' response-export job word"),
    Status("complete", DONE, "[S] mavenlink fixture; QX-PY stops on it"),
    Status("completed", DONE, "[I] complete's past tense"),
    Status("failed", FAILED, "[I] Qualtrics' response-export job word"),
)
# [I] no document gives a maximum import time (as for Dotdigital: a target option)
POLL_DEADLINE = 6 * 3600.0


@register_connection
class Qualtrics(Connection):
    """A Qualtrics API token. Credentials: arguments or QUALTRICS_API_TOKEN / QUALTRICS_DATACENTER."""

    key = "qualtrics"
    vendor = "Qualtrics"
    timeout = 121.0  # [I] no documented figure: as Dotdigital's

    @classmethod
    def from_environment(cls) -> Qualtrics:
        # planning needs no host; a datacenter is only needed to send
        return cls(datacenter=option(None, "QUALTRICS_DATACENTER", "fra1"))

    def __init__(
        self, token: str | Secret | None = None, *, datacenter: str | None = None, base_url: str | None = None
    ) -> None:
        self.token = secret(token, "QUALTRICS_API_TOKEN", "token")
        self.datacenter = option(datacenter, "QUALTRICS_DATACENTER")
        url = option(base_url, "QUALTRICS_BASE_URL")
        if url:
            self.base_url = clean_base_url(url)
        elif self.datacenter:
            if not self.datacenter.replace("-", "").isalnum():
                raise ConfigError(
                    f"datacenter must be an ID such as 'fra1', 'iad1', 'syd1' or 'ca1'; got {self.datacenter!r}"
                )
            self.base_url = f"https://{self.datacenter}.qualtrics.com"
        else:
            raise ConfigError(
                "Qualtrics needs datacenter= (e.g. 'fra1'; it is in your account's "
                "Qualtrics IDs page) or QUALTRICS_DATACENTER, or base_url=..."
            )

    def __repr__(self) -> str:
        creds = "set" if self.token else "missing"
        return f"Qualtrics(token=***, datacenter={self.datacenter!r}, base_url={self.base_url!r}, credentials={creds})"

    def headers(self) -> dict[str, str]:
        need(self.token, "token", "QUALTRICS_API_TOKEN", self.vendor)
        assert self.token is not None
        return {"X-API-TOKEN": self.token.reveal()}

    credential_vars = ("QUALTRICS_API_TOKEN",)

    def check_credentials(self) -> None:
        self.headers()

    def account(self) -> str:
        return f"{self.vendor}|{self.base_url}|{fingerprint(self.token.reveal() if self.token else None)}"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        return self.headers()

    def error_message(self, reply: Reply) -> str:
        """``meta.error.{errorMessage, errorCode}`` (CONTRACTS §4)."""
        try:
            err = reply.json()["meta"]["error"]
            return f"{err.get('errorCode')}: {err.get('errorMessage')}"
        except (ValueError, KeyError, TypeError):
            return super().error_message(reply)

    def transaction_contacts(
        self,
        directory_id: str,
        mailing_list_id: str,
        *,
        transaction_fields: Sequence[str] = (),
        embedded_fields: Sequence[str] | None = None,
        batch_id: str | None = None,
        contact_fields: Mapping[str, str] | None = None,
        poll_deadline: float = POLL_DEADLINE,
    ) -> QualtricsTransactionContacts:
        """Columns named like a contact key (firstName, lastName, email, extRef, language,
        unsubscribed; case, '_' and '-' ignored) become those keys; ``contact_fields`` maps
        others, ``{"firstName": "first"}``. ``transaction_fields`` go in transactionData, the
        other columns (or ``embedded_fields``) in embeddedData. ``poll_deadline``: vendor
        seconds of polling one import before it is reported pending."""
        mapped = name_map(contact_fields, "contact_fields")
        if mapped is not None and not isinstance(mapped, dict):
            raise ConfigError(
                f"contact_fields must map contact keys to column names, e.g. "
                f"{{'firstName': 'first'}}; got {contact_fields!r}"
            )
        return QualtricsTransactionContacts(
            self,
            directory_id,
            mailing_list_id,
            as_names(transaction_fields, "transaction_fields") or (),
            as_names(embedded_fields, "embedded_fields"),
            batch_id,
            poll_deadline,
            mapped,
        )


@register
@dataclass(frozen=True, repr=False)
class QualtricsTransactionContacts(Target):
    """``POST /API/v3/directories/{dir}/mailinglists/{list}/transactioncontacts``."""

    example = Example(
        "survey_transactions.csv",
        {
            "directory_id": "POOL_demo",
            "mailing_list_id": "CG_demo",
            "transaction_fields": ["order_id", "amount", "visit_date"],
        },
    )

    connection: Qualtrics = field(compare=False)
    directory_id: str
    mailing_list_id: str
    transaction_fields: tuple[str, ...] = ()
    embedded_fields: tuple[str, ...] | None = None
    batch_id: str | None = None
    poll_deadline: float = POLL_DEADLINE
    contact_fields: dict[str, str] | None = None

    name: ClassVar[str] = "qualtrics.transaction_contacts"
    statuses: ClassVar[Statuses | None] = IMPORT_STATUSES
    limits: ClassVar[Limits] = Limits(
        max_bytes=5_000_000,
        max_records=10_000,
        max_concurrent=1,
        min_interval=None,
        concurrency_scope="mailing_list_id",
        typical_job_seconds=20.0,
        sources={
            "max_bytes": QX_CREATE,
            "max_records": QX_CREATE,
            "max_concurrent": "QX-QD create-contact-in-mailing-list: one import per list at a time",
            "typical_job_seconds": "[I] estimate",
        },
    )

    def __post_init__(self) -> None:
        for arg, prefix in (("directory_id", "POOL_"), ("mailing_list_id", "CG_")):
            v = getattr(self, arg)
            if not isinstance(v, str) or not v.startswith(prefix) or len(v) <= len(prefix):
                raise ConfigError(
                    f"{arg} must be a Qualtrics ID starting with {prefix!r} "
                    f"(Directories → ID in the Qualtrics IDs page); got {v!r}"
                )
        dup = sorted({f for f in self.transaction_fields if self.transaction_fields.count(f) > 1})
        if dup:
            raise ConfigError(f"transaction_fields lists {dup} more than once")
        if self.embedded_fields is not None:
            overlap = sorted(set(self.embedded_fields) & set(self.transaction_fields))
            if overlap:
                raise ConfigError(f"embeddedData keys must not overlap transaction_fields; both list {overlap}")
        if self.batch_id is not None and (
            not isinstance(self.batch_id, str) or not self.batch_id.strip() or len(self.batch_id) > BATCH_ID_RESERVED
        ):
            raise ConfigError(
                f"batch_id must be a Qualtrics transaction batch ID of at most "
                f"{BATCH_ID_RESERVED} characters; got {self.batch_id!r}"
            )
        check_deadline(self.poll_deadline)
        for key in self.contact_fields or {}:
            if key not in STANDARD:
                raise ConfigError(one_of(key, STANDARD, "contact_fields keys"))

    def describe(self) -> dict[str, Any]:
        return {
            "directory_id": self.directory_id,
            "mailing_list_id": self.mailing_list_id,
            "transaction_fields": self.transaction_fields,
            "embedded_fields": self.embedded_fields,
            "batch_id": self.batch_id,
            "poll_deadline": self.poll_deadline,
            "contact_fields": self.contact_fields,
        }

    @property
    def path(self) -> str:
        return f"/API/v3/directories/{self.directory_id}/mailinglists/{self.mailing_list_id}/transactioncontacts"

    def framing(self, batch_id: str | None = None) -> Framing:
        """The envelope; without a batch id it reserves BATCH_ID_RESERVED bytes for one."""
        bid = batch_id or self.batch_id or BATCH_PLACEHOLDER
        if self.transaction_fields:
            meta = json.dumps(
                {"batchId": bid, "fields": list(self.transaction_fields)}, separators=(",", ":"), ensure_ascii=False
            )
            prefix = '{"transactionMeta":' + meta + ',"contacts":['
        else:
            prefix = '{"contacts":['
        return Framing(prefix.encode(), b"]}", trim=1)

    def bind(self, schema: pl.Schema) -> Binding:
        problems: list[Problem] = chk.unknown_fields(schema, self.transaction_fields, "transaction_fields")
        given = self.contact_fields or {}
        problems += chk.unknown_fields(schema, list(given.values()), "contact_fields")
        standard = {
            f: c
            for f in STANDARD
            if (c := chk.find_column(schema, f)) is not None
            and c not in self.transaction_fields
            and c not in given.values()
        }
        standard |= {f: c for f, c in given.items() if c in schema}
        standard = {f: standard[f] for f in STANDARD if f in standard}  # the documented order
        taken = set(standard.values()) | set(self.transaction_fields)
        if self.embedded_fields is not None:
            problems += chk.unknown_fields(schema, self.embedded_fields, "embedded_fields")
            embedded = [c for c in self.embedded_fields if c in schema]
        else:
            embedded = [c for c in schema.names() if c not in taken]
        trans = [c for c in self.transaction_fields if c in schema]
        problems += chk.unsupported(
            schema, [*standard.values(), *embedded, *trans], allow_nested=False, vendor="Qualtrics"
        )
        for c in embedded:
            if len(c) > MAX_EMBEDDED_NAME:
                problems.append(
                    Problem(
                        None,
                        c,
                        "too_long",
                        f"embedded data name {c[:40]!r}… is over {MAX_EMBEDDED_NAME} characters; rename the column.",
                    )
                )
        if "unsubscribed" in standard and not isinstance(schema[standard["unsubscribed"]], (pl.Boolean, pl.Null)):
            problems.append(
                Problem(
                    None,
                    standard["unsubscribed"],
                    "wrong_type",
                    f"{standard['unsubscribed']!r} maps to unsubscribed, which must be "
                    f"Boolean; it is {schema[standard['unsubscribed']]}. Cast it (== 'yes').",
                )
            )
        checks: list[Check] = chk.finite(schema, [*standard.values(), *embedded, *trans])
        if "email" in standard:
            checks += chk.emails(standard["email"])
        ids = [pl.col(standard[f]).is_null() for f in IDENTIFIERS if f in standard]
        if ids:
            checks.append(
                Check(
                    None,
                    "no_identifier",
                    "the contact has no email or extRef; Qualtrics needs one to "
                    "identify it. Fill one in or drop the row.",
                    pl.all_horizontal(ids),
                )
            )
        else:
            problems.append(
                Problem(
                    None,
                    "email",
                    "missing_column",
                    "no email or extRef column: Qualtrics needs one to identify "
                    "each contact. Add one (e.g. a column named 'email').",
                )
            )
        if trans:
            # the seed: transactionData "must, at a minimum, have keys that match at least one"
            # of transactionMeta.fields, so an all-null row would send {} and create nothing
            checks.append(
                Check(
                    None,
                    "no_transaction_data",
                    f"every transaction field ({', '.join(trans)}) is null, so Qualtrics would "
                    "create no transaction for this contact. Fill one in, drop the row, or send "
                    "such contacts without transaction_fields.",
                    pl.all_horizontal([pl.col(c).is_null() for c in trans]),
                )
            )
        for c in [*embedded, *trans]:
            if isinstance(schema[c], (pl.String, pl.Categorical, pl.Enum)):
                checks.append(chk.max_chars(c, MAX_EMBEDDED_VALUE, f"the value of {c!r}"))
        encode = None if problems else (lambda nulls: self._encode(schema, standard, embedded, trans, nulls))
        key = pl.col(standard["email"]).cast(pl.String).str.to_lowercase() if "email" in standard else None
        notes = [f"contact keys: {', '.join(f'{c} → {f}' for f, c in standard.items()) or '(none)'}"]
        if embedded:
            notes.append(f"embeddedData: {', '.join(embedded)}")
        if trans:
            notes.append(f"transactionData: {', '.join(trans)}")
        looks = [c for c in embedded if c.lower() in {x.lower() for x in LOOKALIKES}]
        if looks:
            notes.append(
                f"{', '.join(map(repr, looks))} go in embeddedData: a transaction contacts import "
                f"takes only the contact keys {', '.join(STANDARD)} (CONTRACTS §6)"
            )
        return Binding(self, tuple(problems), tuple(checks), None, encode, self.framing(), key, tuple(notes))

    # a re-sent transaction contacts import adds the transactions again (CONTRACTS §4, dedup)
    resend_safe: ClassVar[bool] = False

    def prepare(self, now_utc: str) -> Flow | None:
        if not self.transaction_fields or self.batch_id:
            return None
        return _create_batch(self, now_utc)

    def submit_request(self, body: bytes, content_type: str, context: Any) -> Request:
        return Request("POST", self.path, "submit", self.reframe(body, context), content_type, idempotent=False)

    def accepted(self, reply: Reply) -> Submission:
        result = reply.json()["result"]
        unprocessed = [int(i) for i in (result.get("contacts") or {}).get("unprocessed") or []]
        early = tuple(Fault("unprocessed", UNPROCESSED, index=i) for i in unprocessed)
        return Submission(str(result["id"]), result.get("status"), early)

    def track(self, import_id: str, early: tuple[Any, ...], context: Any, sent: int = 0) -> Flow:
        return _track(self, import_id, len(early), sent)

    def account_checks(self, schema: pl.Schema) -> Flow:
        return _account(self)

    # imports append (a re-run would add every transaction again): a row is known by its whole record
    baseline_key: ClassVar[str] = "record"

    def destination(self) -> str:
        return f"directory={self.directory_id}|mailing_list={self.mailing_list_id}"

    def layout(self, binding: Binding) -> bytes:
        # transactionMeta's fields decide what a record means; the batch id is new each job
        return json.dumps(list(self.transaction_fields)).encode()

    def reframe(self, body: bytes, batch_id: str | None) -> bytes:
        """Swap the planned envelope (which reserved room for an id) for the real batch id."""
        if batch_id is None:
            return body
        old, new = self.framing().prefix, self.framing(batch_id).prefix
        if not body.startswith(old) or len(new) > len(old):
            raise ConfigError(f"batch id {batch_id!r} is longer than the {BATCH_ID_RESERVED} characters reserved")
        return new + body[len(old) :]

    def _encode(
        self, schema: pl.Schema, standard: dict[str, str], embedded: list[str], trans: list[str], nulls: frozenset[str]
    ) -> pl.Expr:
        """A contact object; embedded/transaction values as strings [I]; nulls omitted."""
        members = []
        for f, c in standard.items():
            e = pl.col(c) if f == "unsubscribed" else csv_text(pl.col(c), schema[c], ISO)
            members.append(e.alias(f))

        def obj(cols: list[str], name: str) -> pl.Expr:
            return pl.struct([csv_text(pl.col(c), schema[c], ISO).alias(c) for c in cols]).alias(name)

        if embedded:
            members.append(obj(embedded, "embeddedData"))
        if trans:
            members.append(obj(trans, "transactionData"))
        encoded = pl.struct(members).struct.json_encode()
        # Three objects (contact, embeddedData, transactionData); their keys are known, and
        # a key is stripped only when its frame column holds nulls in this batch.
        keys: list[str] = []
        openers: list[str] = []
        for obj_keys in ([(f, c) for f, c in standard.items()], [(c, c) for c in embedded], [(c, c) for c in trans]):
            null_keys = [k for k, col in obj_keys if col in nulls]
            keys += null_keys
            if obj_keys and obj_keys[0][1] in nulls:
                openers.append(obj_keys[0][0])
        return strip_keys(encoded, keys, openers) + pl.lit(",")


# --- statuses and lifecycle (sans-I/O; driven by the engine) -----------------------------


def _create_batch(t: QualtricsTransactionContacts, now_utc: str) -> Flow:
    """``POST /directories/{dir}/transactionbatches`` → the batch id for transactionMeta."""
    body = json.dumps({"transactionIds": [], "creationDate": now_utc}).encode()
    # a repeat after a lost answer leaves an empty batch behind, and duplicates nothing
    reply = yield from call(
        Request("POST", f"/API/v3/directories/{t.directory_id}/transactionbatches", "batch", body, "application/json")
    )
    return str(reply.json()["result"]["id"])


UNPROCESSED = (
    "Qualtrics did not process this contact: its embedded or transaction data was not accepted "
    "(a null value, a non-object, or a key also in transaction fields)."
)


def _read_status(doc: Any) -> StatusAnswer:
    """Done when the word means complete or ``percentComplete`` reached 100 (a number or a
    string such as ``"50.0"``, CONTRACTS §6); a failed word wins over the percentage."""
    result = member(doc, "result")
    word = member(result, "status")
    word = None if word is None else str(word)
    percent = as_percent(member(result, "percentComplete"))
    found = IMPORT_STATUSES.classify(word)
    means = None if found is None else found.means
    if means != FAILED and percent is not None and percent >= 100:
        means = DONE
    return StatusAnswer(word, means, percent, doc)


def _track(t: QualtricsTransactionContacts, import_id: str, unprocessed: int, sent: int) -> Flow:
    """Poll → summary (→ the import report when the counts leave rows open).

    ``unprocessed``: contacts the submit answer already listed; ``sent``: contacts in the request."""
    status_path = f"{t.path}/{import_id}"
    last, ended = yield from poll(
        Request("GET", status_path, "poll"), _read_status, poll_intervals(2.0, 1.5, 30.0), t.poll_deadline
    )  # [I] no documented schedule
    if not ended or last is None:
        return still_running(import_id, last, t.poll_deadline, "Qualtrics")
    if last.means == FAILED:
        return Outcome(import_id, "failed", last.word, message=f"Qualtrics ended the import with status {last.word}")
    summary = member((yield from call(Request("GET", status_path + "/summary", "report"))).json(), "result") or {}
    faults = [
        Fault("invalid_email", f"Qualtrics lists {e!r} among invalidEmails.", key=str(e).lower())
        for e in member(summary, "invalidEmails") or []
    ]
    count = member(member(summary, "contacts"), "count") or {}
    added, updated, failed = (as_int(member(count, w)) for w in ("added", "updated", "failed"))
    imported = None if added is None or updated is None else added + updated
    rejected = None if failed is None else failed + unprocessed
    created = as_int(member(member(member(summary, "transactions"), "count"), "created"))
    totals = Totals(imported, rejected, created if t.transaction_fields else None)
    extra: tuple[Fault, ...] = ()
    expected = sent - unprocessed - len(faults)
    if imported != expected or (t.transaction_fields and created != expected):
        extra = tuple((yield from _import_report(t, import_id)))
    return Outcome(import_id, "finished", last.word, tuple(faults), totals, extra=extra)


# [I] the report's importStatus / transactionStatus words are not enumerated anywhere found:
# these read as written or refused; any other word leaves the row in doubt
REPORT_OK = frozenset({"success", "succeeded", "successful", "created", "added", "updated", "imported", "ok"})
REPORT_FAILED = frozenset({"failed", "failure", "error", "invalid", "rejected", "skipped", "unprocessed"})


def _import_report(t: QualtricsTransactionContacts, import_id: str) -> Generator[Step, Reply | None, list[Fault]]:
    """The per-row import report, all pages (CONTRACTS §6 [S]); nothing when the service
    does not answer it (it is documented for XM Directory only)."""
    path = f"/API/v3/directories/{t.directory_id}/imports/api-import/jobs/{import_id}/report"
    out: list[Fault] = []
    token = None
    for _ in range(10_000):  # pages; a report never has more pages than contacts
        reply = yield from call(
            Request("GET", path, "report", params={"skipToken": token} if token else {}, answered=frozenset({400, 404}))
        )
        if reply.status != 200:
            return out
        doc = reply.json()
        for entry in (
            member(member(doc, "results") or member(member(doc, "result"), "results"), "importReportEntries") or []
        ):
            fault = _report_entry(entry, bool(t.transaction_fields))
            if fault is not None:
                out.append(fault)
        token = member(doc, "skipToken") or member(member(doc, "result"), "skipToken")
        if not token:
            return out
    return out


def _report_entry(entry: Any, with_transactions: bool) -> Fault | None:
    index = as_int(member(entry, "sourceIndexId"))
    if index is None:
        return None
    words = [("importStatus", "importStatusCode")]
    if with_transactions:
        words.append(("transactionStatus", "transactionStatusCode"))
    verdict = "accepted"
    for status, code in words:
        word = str(member(entry, status) or "").strip().casefold()
        if word in REPORT_FAILED:
            why = member(entry, code) or member(entry, status)
            return Fault(str(why), f"the Qualtrics import report says {status} {member(entry, status)!r}", index=index)
        if word not in REPORT_OK:
            verdict = ""
    return Fault("imported", None, index=index, verdict="accepted") if verdict else None


def _account(t: QualtricsTransactionContacts) -> Generator[Step, Reply | None, list[Problem]]:
    """1 call, ``GET /directories/{dir}/mailinglists/{list}`` (2 with a ``batch_id``:
    ``GET /directories/{dir}/transactionbatches/{batch}``), cached a minute. Qualtrics takes
    an import into a missing list or batch and creates nothing (seed FAQ): ask first."""
    base = f"/API/v3/directories/{t.directory_id}"
    wanted = [
        (
            f"{base}/mailinglists/{t.mailing_list_id}",
            f"mailing list {t.mailing_list_id}",
            "check directory_id and mailing_list_id.",
        ),
    ]
    if t.batch_id:
        wanted.append(
            (
                f"{base}/transactionbatches/{t.batch_id}",
                f"transaction batch {t.batch_id}",
                "no transaction would be created; check batch_id, or leave it out to have one made for the job.",
            )
        )
    found = []
    for path, what, fix in wanted:
        reply = yield from call(Request("GET", path, "account", answered=frozenset({400, 404}), cache=60.0))
        if reply.status != 200:
            problem = f"Qualtrics has no {what} in directory {t.directory_id} (HTTP {reply.status}): {fix}"
            found.append(Problem(None, None, "unknown_destination", problem))
    return found
