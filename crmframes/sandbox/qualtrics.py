"""Qualtrics XM Directory in the sandbox: transaction batches and transaction contacts imports.

Written from the seed (CONTRACTS §4) and what integrations see (§6): the envelope
``{result, meta}``, ``contacts.unprocessed`` indices in the submit answer, a status with
``percentComplete`` (a number, or a string in one integration's fixture), a summary with
``invalidEmails``, and a per-row import report paged by ``skipToken``. Undocumented
choices are in ``_rules``.
"""

from __future__ import annotations

import functools
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmframes.sandbox import _rules as R
from crmframes.sandbox._state import BadRequest, Job

if TYPE_CHECKING:
    from crmframes.sandbox._app import Sandbox

# what the sandbox package reads from each vendor module (``_app.VENDORS``)
KEY = "qualtrics"  # the connection's key (``crmframes.qualtrics...`` targets)
CREDENTIALS = ("sandbox-token",)  # any non-empty ones work; these are what ``sb.qualtrics()`` uses
ENDPOINTS: tuple[str, ...] = ("qualtrics",)  # the imports ``status_mix`` can steer
STORE: dict[str, Any] = {"mailing_lists": {}, "batches": {}}  # what the account holds, in ``state()["qualtrics"]``
PREFIXES = ("/API/v3/",)
VARIANTS = {
    "qualtrics_percent_string": "percentComplete as a string such as \"50.0\" and the words 'in progress' / "
    "'complete' (mavenlink/qualtrics_api's fixture, CONTRACTS §6)",
    "qualtrics_percent_only": "the status word stays 'in progress' after the import ends: only percentComplete "
    "reaching 100 says it is done (QX-BJ stops on it)",
    "qualtrics_merged_duplicates": "contacts repeating an email within one import are merged and counted once, "
    "so the counts cover fewer contacts than were sent",
    "qualtrics_no_import_report": "the per-row import report is not available (it is documented for XM "
    "Directory only): 404",
}
EMAIL = re.compile(r"^[^\s@\"(),:;<>\[\]\\]+@[^\s@\"(),:;<>\[\]\\.]+(\.[^\s@\"(),:;<>\[\]\\.]+)+$")
# the keys of a transaction contact (the seed; the client generated from Qualtrics' OpenAPI)
CONTACT_KEYS = frozenset(
    {"firstName", "lastName", "email", "extRef", "embeddedData", "language", "unsubscribed", "transactionData"}
)
DONE = ("complete", "completed")  # [I] no document enumerates the words


def meta(status: int) -> dict[str, Any]:
    reason = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        413: "Payload Too Large",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    return {"httpStatus": f"{status} - {reason}", "requestId": str(uuid.uuid4())}


def ok(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"result": result, "meta": meta(200)})


def qx_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"meta": {**meta(status), "error": {"errorMessage": message, "errorCode": code}}}, status)


def error(status: int, text: str, path: str = "") -> JSONResponse:
    code = {429: "TOO_MANY_REQUESTS", 401: "AUTH_FAILED", 413: "REQUEST_TOO_LARGE"}.get(
        status, "SERVICE_UNAVAILABLE" if status >= 500 else "BAD_REQUEST"
    )
    return qx_error(status, code, text)


def rate_limit_headers(wait: int) -> dict[str, str]:
    return {}


def authorised(sb: Sandbox, request: Request) -> Response | None:
    h = request.headers
    token = h.get("x-api-token") or h.get("authorization", "").removeprefix("Bearer ").strip()
    fixed = sb.credentials.get("qualtrics")
    if not token or (fixed and (token,) != fixed):
        return qx_error(401, "AUTH_FAILED", "Authentication failed: check X-API-TOKEN.")
    return None


def _too_large() -> Response:
    return qx_error(
        R.QX_OVERSIZE_STATUS, "REQUEST_TOO_LARGE", f"The request body is larger than {R.QX_MAX_BODY:,} bytes."
    )


def _bad_json() -> Response:
    return qx_error(400, "BAD_REQUEST", "The request body is not valid JSON.")


async def batch(sb: Sandbox, request: Request) -> Response:
    doc = await sb.json(request, R.QX_MAX_BODY, _too_large(), _bad_json())
    created = doc.get("creationDate") if isinstance(doc, dict) else None
    if created is not None and not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", str(created)):
        return qx_error(400, "INVALID_DATE", "creationDate must be yyyy-MM-ddTHH:mm:ssZ (24-hour UTC).")
    bid = "BT_" + uuid.uuid4().hex[:15]
    sb.state.store["qualtrics"]["batches"].setdefault(bid, {})
    return ok({"id": bid})


async def submit(sb: Sandbox, request: Request) -> Response:
    d, ml = request.path_params["dir"], request.path_params["ml"]
    doc = await sb.json(request, R.QX_MAX_BODY, _too_large(), _bad_json())
    contacts: Any = doc.get("contacts") if isinstance(doc, dict) else None
    if not isinstance(contacts, list):
        return qx_error(400, "BAD_REQUEST", "The body must have a contacts array.")
    if len(contacts) > R.QX_MAX_CONTACTS:
        return qx_error(
            R.QX_OVERSIZE_STATUS,
            "REQUEST_TOO_LARGE",
            f"At most {R.QX_MAX_CONTACTS:,} contacts per request; got {len(contacts):,}.",
        )
    tmeta = doc.get("transactionMeta")
    has_transactions = any(isinstance(c, dict) and "transactionData" in c for c in contacts)
    if tmeta is not None or has_transactions:
        # transactionMeta is "only required if any contact has transactionData" (seed) [I: a 400]
        if not isinstance(tmeta, dict) or not tmeta.get("batchId"):
            return qx_error(
                400, "BAD_REQUEST", "transactionMeta with a batchId is required when a contact has transactionData."
            )
        fields_ = tmeta.get("fields")
        if not isinstance(fields_, list) or not fields_ or not all(isinstance(f, str) for f in fields_):
            return qx_error(400, "BAD_REQUEST", "transactionMeta.fields must be a list of strings.")
    fields_set = set(tmeta.get("fields") or []) if isinstance(tmeta, dict) else set()
    bid = str(tmeta["batchId"]) if isinstance(tmeta, dict) and tmeta.get("batchId") else None
    batch_exists = bid is not None and bid in sb.state.store["qualtrics"]["batches"]
    now = sb.now()
    starts = max(now, sb.state.qx_list_free.get(ml, now))  # one import per list at a time
    job = sb.new_job("qualtrics", len(contacts), done=DONE, failed="failed", starts=starts)
    sb.state.qx_list_free[ml] = starts + job.duration
    unknown = any(u in d or u in ml for u in R.QX_UNKNOWN_IDS)
    unprocessed: list[int] = []
    invalid: list[str] = []
    entries: list[dict[str, Any]] = []  # the per-row import report
    added = updated = created = 0
    seen: set[str] = set()
    book = sb.state.store["qualtrics"]["mailing_lists"].get(ml, {})
    merge = sb.variant("qualtrics_merged_duplicates")
    for i, c in enumerate(contacts):
        problem = _contact_problem(c, fields_set)
        if problem:
            unprocessed.append(i)
            entries.append(_entry(i, c, "failure", problem, None))
            continue
        email = c.get("email")
        if email is not None and not EMAIL.match(str(email)):
            invalid.append(email)
            entries.append(_entry(i, c, "failure", "INVALID_EMAIL", None))
            continue
        if unknown:  # a deleted directory or list: the import ends with every count 0 (seed FAQ)
            continue
        ident = str(email or c.get("extRef") or "").lower()
        if not ident:
            unprocessed.append(i)
            entries.append(_entry(i, c, "failure", "NO_IDENTIFIER", None))
            continue
        if not (merge and ident in seen):
            if ident in book or ident in seen:
                updated += 1
            else:
                added += 1
        seen.add(ident)
        job.writes.append((("qualtrics", "mailing_lists", ml), ident))
        transaction = None
        if "transactionData" in c:
            transaction = "success" if batch_exists else "failure"
            if batch_exists:  # "transactions will not be created" when the batch does not exist (seed)
                created += 1
                job.writes.append((("qualtrics", "batches", bid), ident))  # type: ignore[arg-type]
        entries.append(_entry(i, c, "success", "OK", transaction))
    job.info.update(
        added=added, updated=updated, failed=len(invalid), invalid=invalid, created=created, entries=entries, dir=d
    )
    url = f"{request.base_url}API/v3/directories/{d}/mailinglists/{ml}/transactioncontacts/{job.id}"
    return ok(
        {"id": job.id, "contacts": {"unprocessed": unprocessed}, "tracking": {"url": url}, "status": _running_word(sb)}
    )


def _contact_problem(c: Any, fields_: set[str]) -> str | None:
    """Why Qualtrics would put a contact in ``unprocessed``, or None (CONTRACTS §4 and the seed)."""
    if not isinstance(c, dict):
        return "NOT_AN_OBJECT"
    if set(c) - CONTACT_KEYS:
        return "UNKNOWN_CONTACT_KEY"  # [I] a key outside the documented set
    for name in ("embeddedData", "transactionData"):
        v = c.get(name)
        if name in c and not isinstance(v, dict):
            return "INVALID_" + name.upper()
    emb = c.get("embeddedData") or {}
    if set(emb) & fields_:
        return "EMBEDDED_DATA_OVERLAPS_TRANSACTION_FIELDS"
    if "transactionData" in c and not set(c["transactionData"]) & fields_:
        return "TRANSACTION_DATA_MATCHES_NO_FIELD"  # it "must, at a minimum, have keys that match" one field
    values = [*c.values(), *emb.values(), *(c.get("transactionData") or {}).values()]
    if R.QX_NULLS_UNPROCESSED and any(v is None for v in values):
        return "NULL_VALUE"
    return None


def _entry(i: int, c: Any, status: str, code: str, transaction: str | None) -> dict[str, Any]:
    entry = {
        "sourceIndexId": str(i),
        "email": c.get("email") if isinstance(c, dict) else None,
        "importStatus": status,
        "importStatusCode": code,
    }
    if transaction is not None:
        entry.update(
            transactionStatus=transaction, transactionStatusCode="OK" if transaction == "success" else "BATCH_NOT_FOUND"
        )
    return entry


def _running_word(sb: Sandbox) -> str:
    return "in progress" if sb.variant("qualtrics_percent_string") else R.QX_STATES[0]


def _job(sb: Sandbox, request: Request) -> Job:
    import_id = request.path_params["import_id"]
    job = sb.state.jobs.get(import_id)
    if job is None or job.kind != "qualtrics":
        raise BadRequest(qx_error(404, "NOT_FOUND", f"Import {import_id} was not found."))
    return job


def _result(sb: Sandbox, job: Job) -> dict[str, Any]:
    p = job.progress(sb.now())
    ended = p >= 1 and job.terminal
    word = job.final if p >= 1 else _running_word(sb)
    if ended and sb.variant("qualtrics_percent_only") and job.applies:
        word = _running_word(sb)  # only the percentage tells
    percent: Any = round(100.0 * p, 1) if ended or p < 1 else 50.0  # a word that never ends stays below 100
    if sb.variant("qualtrics_percent_string"):
        percent = f"{float(percent):.1f}"
    done = ended and job.applies
    i = job.info
    return {
        "percentComplete": percent,
        "status": word,
        "contacts": {
            "count": {
                "added": i["added"] if done else 0,
                "updated": i["updated"] if done else 0,
                "failed": i["failed"] if done else 0,
            }
        },
        "transactions": {"count": {"created": i["created"] if done else 0}},
    }


async def status(sb: Sandbox, request: Request) -> Response:
    return ok(_result(sb, _job(sb, request)))


async def summary(sb: Sandbox, request: Request) -> Response:
    job = _job(sb, request)
    result = _result(sb, job)
    result["invalidEmails"] = job.info["invalid"] if job.done(sb.now()) and job.applies else []
    return ok(result)


async def import_report(sb: Sandbox, request: Request) -> Response:
    """``GET /directories/{dir}/imports/api-import/jobs/{id}/report``: one entry per contact
    sent, ``skipToken`` paging (CONTRACTS §6 [S]); only once the import has ended."""
    job = sb.state.jobs.get(request.path_params["import_id"])
    if (
        job is None
        or job.kind != "qualtrics"
        or sb.variant("qualtrics_no_import_report")
        or not (job.done(sb.now()) and job.applies)
    ):
        return qx_error(404, "NOT_FOUND", "No import report for this import.")
    start = int(request.query_params.get("skipToken") or 0)
    page = job.info["entries"][start : start + R.QX_REPORT_PAGE]
    nxt = start + R.QX_REPORT_PAGE
    return JSONResponse(
        {
            "results": {"importReportEntries": page},
            "skipToken": str(nxt) if nxt < len(job.info["entries"]) else None,
            "meta": meta(200),
        }
    )


async def mailing_list(sb: Sandbox, request: Request) -> Response:
    """``GET /directories/{dir}/mailinglists/{list}``: the list, or 404 for a seeded unknown id."""
    d, ml = request.path_params["dir"], request.path_params["ml"]
    if any(u in d or u in ml for u in R.QX_UNKNOWN_IDS):
        return qx_error(404, "NOT_FOUND", f"Mailing list {ml} was not found in directory {d}.")
    held = sb.state.store["qualtrics"]["mailing_lists"].get(ml, {})
    return ok({"mailingListId": ml, "name": f"Mailing list {ml}", "contactCount": len(held)})


async def get_batch(sb: Sandbox, request: Request) -> Response:
    bid = request.path_params["batch"]
    if bid not in sb.state.store["qualtrics"]["batches"]:
        return qx_error(404, "NOT_FOUND", f"Transaction batch {bid} was not found.")
    return ok({"batchId": bid, "transactionIds": []})


def holds(store: dict[str, Any]) -> str:
    """What the account holds, in words (``crmframes demo``)."""
    return f"{sum(len(m) for m in store['mailing_lists'].values())} Qualtrics contacts"


def routes(sb: Sandbox) -> list[Route]:
    bound = functools.partial(sb.endpoint, sys.modules[__name__])

    base = "/API/v3/directories/{dir}"
    return [
        Route(base + "/transactionbatches", bound(batch), methods=["POST"]),
        Route(base + "/mailinglists/{ml}/transactioncontacts", bound(submit), methods=["POST"]),
        Route(base + "/mailinglists/{ml}/transactioncontacts/{import_id}", bound(status), methods=["GET"]),
        Route(base + "/mailinglists/{ml}/transactioncontacts/{import_id}/summary", bound(summary), methods=["GET"]),
        Route(base + "/imports/api-import/jobs/{import_id}/report", bound(import_report), methods=["GET"]),
        Route(base + "/mailinglists/{ml}", bound(mailing_list), methods=["GET"]),
        Route(base + "/transactionbatches/{batch}", bound(get_batch), methods=["GET"]),
    ]
