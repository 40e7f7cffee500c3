"""Qualtrics XM Directory: transaction contacts import into a mailing list.

Contract and sources: shared/vendors/CONTRACTS.md §4.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from crmframes import _checks as chk
from crmframes._connection import Connection, Secret, clean_base_url, fingerprint, need, option, secret
from crmframes._encode import ISO, csv_text, strip_keys
from crmframes._errors import ConfigError
from crmframes._flow import Fault, Flow, Outcome, Reply, Request, Submission, Totals, call, note, pause, poll_intervals
from crmframes._target import Binding, Check, Framing, Limits, Problem, Target, register

QX_CREATE = "https://api.qualtrics.com/bab13356ac724-create-transaction-contacts-import"
# Standard contact fields, in the order Qualtrics documents them (QX-QD create-contact).
STANDARD = ("firstName", "lastName", "email", "phone", "extRef", "language", "unsubscribed")
MAX_EMBEDDED_NAME = 200  # QX-SUP (UI doc; applying it to the API is [I])
MAX_EMBEDDED_VALUE = 1024  # QX-SUP
# Qualtrics creates the batch id at submit time; plans reserve this many bytes for it [I].
BATCH_ID_RESERVED = 40
BATCH_PLACEHOLDER = "BT_" + "0" * (BATCH_ID_RESERVED - 3)


class Qualtrics(Connection):
    """A Qualtrics API token. Credentials: arguments or QUALTRICS_API_TOKEN / QUALTRICS_DATACENTER."""

    vendor = "Qualtrics"

    def __init__(self, token: str | Secret | None = None, *, datacenter: str | None = None,
                 base_url: str | None = None) -> None:
        self.token = secret(token, "QUALTRICS_API_TOKEN")
        self.datacenter = option(datacenter, "QUALTRICS_DATACENTER")
        url = option(base_url, "QUALTRICS_BASE_URL")
        if url:
            self.base_url = clean_base_url(url)
        elif self.datacenter:
            if not self.datacenter.replace("-", "").isalnum():
                raise ConfigError(f"datacenter must be an ID such as 'fra1', 'iad1', 'syd1' or 'ca1'; got {self.datacenter!r}")
            self.base_url = f"https://{self.datacenter}.qualtrics.com"
        else:
            raise ConfigError("Qualtrics needs datacenter= (e.g. 'fra1'; it is in your account's "
                              "Qualtrics IDs page) or QUALTRICS_DATACENTER, or base_url=...")

    def __repr__(self) -> str:
        creds = "set" if self.token else "missing"
        return f"Qualtrics(token=***, datacenter={self.datacenter!r}, base_url={self.base_url!r}, credentials={creds})"

    def headers(self) -> dict[str, str]:
        need(self.token, "token", "QUALTRICS_API_TOKEN", self.vendor)
        assert self.token is not None
        return {"X-API-TOKEN": self.token.reveal()}

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

    def transaction_contacts(self, directory_id: str, mailing_list_id: str, *,
                             transaction_fields: Sequence[str] = (),
                             embedded_fields: Sequence[str] | None = None,
                             batch_id: str | None = None) -> QualtricsTransactionContacts:
        if isinstance(transaction_fields, str) or isinstance(embedded_fields, str):
            raise ConfigError("transaction_fields and embedded_fields are lists of column names, not strings")
        return QualtricsTransactionContacts(
            self, directory_id, mailing_list_id, tuple(transaction_fields),
            None if embedded_fields is None else tuple(embedded_fields), batch_id)


@register
@dataclass(frozen=True, repr=False)
class QualtricsTransactionContacts(Target):
    """``POST /API/v3/directories/{dir}/mailinglists/{list}/transactioncontacts``."""

    connection: Qualtrics = field(compare=False)
    directory_id: str
    mailing_list_id: str
    transaction_fields: tuple[str, ...] = ()
    embedded_fields: tuple[str, ...] | None = None
    batch_id: str | None = None

    name: ClassVar[str] = "qualtrics.transaction_contacts"
    limits: ClassVar[Limits] = Limits(
        max_bytes=5_000_000, max_records=10_000, max_concurrent=1, min_interval=None,
        concurrency_scope="mailing_list", typical_job_seconds=20.0,
        sources={"max_bytes": QX_CREATE, "max_records": QX_CREATE,
                 "max_concurrent": "QX-QD create-contact-in-mailing-list: one import per list at a time",
                 "typical_job_seconds": "[I] estimate"},
    )

    def __post_init__(self) -> None:
        for arg, prefix in (("directory_id", "POOL_"), ("mailing_list_id", "CG_")):
            v = getattr(self, arg)
            if not isinstance(v, str) or not v.startswith(prefix) or len(v) <= len(prefix):
                raise ConfigError(f"{arg} must be a Qualtrics ID starting with {prefix!r} "
                                  f"(Directories → ID in the Qualtrics IDs page); got {v!r}")
        dup = sorted({f for f in self.transaction_fields if self.transaction_fields.count(f) > 1})
        if dup:
            raise ConfigError(f"transaction_fields lists {dup} more than once")
        if self.embedded_fields is not None:
            overlap = sorted(set(self.embedded_fields) & set(self.transaction_fields))
            if overlap:
                raise ConfigError(f"embeddedData keys must not overlap transaction_fields; both list {overlap}")
        if self.batch_id is not None and (not isinstance(self.batch_id, str) or
                                          not self.batch_id.strip() or len(self.batch_id) > BATCH_ID_RESERVED):
            raise ConfigError(f"batch_id must be a Qualtrics transaction batch ID of at most "
                              f"{BATCH_ID_RESERVED} characters; got {self.batch_id!r}")

    def describe(self) -> dict[str, Any]:
        return {"directory_id": self.directory_id, "mailing_list_id": self.mailing_list_id,
                "transaction_fields": self.transaction_fields, "embedded_fields": self.embedded_fields,
                "batch_id": self.batch_id}

    @property
    def path(self) -> str:
        return f"/API/v3/directories/{self.directory_id}/mailinglists/{self.mailing_list_id}/transactioncontacts"

    def framing(self, batch_id: str | None = None) -> Framing:
        """The envelope; without a batch id it reserves BATCH_ID_RESERVED bytes for one."""
        bid = batch_id or self.batch_id or BATCH_PLACEHOLDER
        if self.transaction_fields:
            meta = json.dumps({"batchId": bid, "fields": list(self.transaction_fields)},
                              separators=(",", ":"), ensure_ascii=False)
            prefix = '{"transactionMeta":' + meta + ',"contacts":['
        else:
            prefix = '{"contacts":['
        return Framing(prefix.encode(), b"]}", trim=1)

    def bind(self, schema: pl.Schema) -> Binding:
        problems: list[Problem] = chk.unknown_fields(schema, self.transaction_fields, "transaction_fields")
        standard = {f: c for f in STANDARD if (c := chk.find_column(schema, f)) is not None
                    and c not in self.transaction_fields}
        taken = set(standard.values()) | set(self.transaction_fields)
        if self.embedded_fields is not None:
            problems += chk.unknown_fields(schema, self.embedded_fields, "embedded_fields")
            embedded = [c for c in self.embedded_fields if c in schema]
        else:
            embedded = [c for c in schema.names() if c not in taken]
        trans = [c for c in self.transaction_fields if c in schema]
        problems += chk.unsupported(schema, [*standard.values(), *embedded, *trans],
                                    allow_nested=False, vendor="Qualtrics")
        for c in embedded:
            if len(c) > MAX_EMBEDDED_NAME:
                problems.append(Problem(None, c, "too_long",
                                        f"embedded data name {c[:40]!r}… is over {MAX_EMBEDDED_NAME} characters; rename the column."))
        if "unsubscribed" in standard and not isinstance(schema[standard["unsubscribed"]], (pl.Boolean, pl.Null)):
            problems.append(Problem(None, standard["unsubscribed"], "wrong_type",
                                    f"{standard['unsubscribed']!r} maps to unsubscribed, which must be "
                                    f"Boolean; it is {schema[standard['unsubscribed']]}. Cast it (== 'yes')."))
        checks: list[Check] = chk.finite(schema, [*standard.values(), *embedded, *trans])
        if "email" in standard:
            checks.append(chk.email(standard["email"]))
        ids = [pl.col(standard[f]).is_null() for f in ("email", "phone", "extRef") if f in standard]
        if ids:
            checks.append(Check(None, "no_identifier",
                                "the contact has no email, phone or extRef; Qualtrics needs one to "
                                "identify it. Fill one in or drop the row.", pl.all_horizontal(ids)))
        else:
            problems.append(Problem(None, "email", "missing_column",
                                    "no email, phone or extRef column: Qualtrics needs one to identify "
                                    "each contact. Add one (e.g. a column named 'email')."))
        for c in [*embedded, *trans]:
            if isinstance(schema[c], (pl.String, pl.Categorical, pl.Enum)):
                checks.append(chk.max_chars(c, MAX_EMBEDDED_VALUE, f"the value of {c!r}"))
        encode = None if problems else (lambda nulls: self._encode(schema, standard, embedded, trans, nulls))
        key = pl.col(standard["email"]).cast(pl.String).str.to_lowercase() if "email" in standard else None
        return Binding(self, tuple(problems), tuple(checks), None, encode, self.framing(), key)

    # a re-sent transaction contacts import adds the transactions again (CONTRACTS §4, dedup)
    resend_safe: ClassVar[bool] = False

    def concurrency_key(self) -> str:
        return f"{self.connection.account()}|{self.mailing_list_id}"  # one import per list at a time

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

    def track(self, import_id: str, early: tuple[Any, ...], context: Any) -> Flow:
        return _track(self, import_id, len(early))

    def reframe(self, body: bytes, batch_id: str | None) -> bytes:
        """Swap the planned envelope (which reserved room for an id) for the real batch id."""
        if batch_id is None:
            return body
        old, new = self.framing().prefix, self.framing(batch_id).prefix
        if not body.startswith(old) or len(new) > len(old):
            raise ConfigError(f"batch id {batch_id!r} is longer than the {BATCH_ID_RESERVED} characters reserved")
        return new + body[len(old):]

    def _encode(self, schema: pl.Schema, standard: dict[str, str], embedded: list[str],
                trans: list[str], nulls: frozenset[str]) -> pl.Expr:
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



# --- lifecycle (sans-I/O; driven by the engine) ---------------------------------------


def _create_batch(t: QualtricsTransactionContacts, now_utc: str) -> Flow:
    """``POST /directories/{dir}/transactionbatches`` → the batch id for transactionMeta."""
    body = json.dumps({"transactionIds": [], "creationDate": now_utc}).encode()
    # a repeat after a lost answer leaves an empty batch behind, and duplicates nothing
    reply = yield from call(Request("POST", f"/API/v3/directories/{t.directory_id}/transactionbatches", "batch",
                                    body, "application/json"))
    return str(reply.json()["result"]["id"])


QX_DONE, QX_FAILED = ("complete", "completed"), ("failed", "error")  # [I] not enumerated by Qualtrics


UNPROCESSED = ("Qualtrics did not process this contact: its embedded or transaction data was not accepted "
               "(a null value, a non-object, or a key also in transaction fields).")


def _track(t: QualtricsTransactionContacts, import_id: str, unprocessed: int) -> Flow:
    """Poll → summary. ``unprocessed``: contacts the submit answer already listed."""
    status_path = f"{t.path}/{import_id}"
    state = ""
    for wait in poll_intervals(2.0, 1.5, 30.0):  # [I] Qualtrics names no schedule
        yield from pause(wait, "poll")
        res = (yield from call(Request("GET", status_path, "poll"))).json()["result"]
        state = str(res.get("status", "")).lower()
        pct = res.get("percentComplete")
        yield from note("polled", vendor_state=res.get("status"), percent=pct)
        if state in QX_DONE or state in QX_FAILED:
            break
    yield from note("vendor_done", vendor_state=state)
    if state in QX_FAILED:
        return Outcome(import_id, "failed", state, message=f"Qualtrics reports the import {state}")
    summary = (yield from call(Request("GET", status_path + "/summary", "report"))).json()["result"]
    faults = [Fault("invalid_email", f"Qualtrics lists {e!r} among invalidEmails.", key=str(e).lower())
               for e in summary.get("invalidEmails") or []]
    count = (summary.get("contacts") or {}).get("count") or {}
    imported = int(count.get("added", 0)) + int(count.get("updated", 0))
    rejected = int(count.get("failed", 0)) + unprocessed
    return Outcome(import_id, "finished", state, tuple(faults), Totals(imported, rejected, summary))
