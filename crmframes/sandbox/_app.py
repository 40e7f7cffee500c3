"""The sandbox ASGI app: Dotdigital, Qualtrics and D·engage bulk imports at their real paths.

Imports run through the vendor's states over ``job_duration`` real seconds; their
writes land in ``SandboxState`` once, when the job finishes, so ``GET /_sandbox/state``
shows exactly what a real account would hold. Fault knobs (``p429``, ``p5xx``,
``p_drop``, ``p_job_fail``, ``latency``) apply to vendor paths only. Undocumented
choices live in ``_rules``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from crmframes.sandbox import _rules as R

EMAIL = re.compile(r"^[^\s@\"(),:;<>\[\]\\]+@[^\s@\"(),:;<>\[\]\\.]+(\.[^\s@\"(),:;<>\[\]\\.]+)+$")
V2_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
V3_COLLECTION = re.compile(r"^[-A-Za-z_][-A-Za-z0-9_]{1,254}$")
MERGE = {"overwrite": 0, "onlyoverwriteifnotempty": 1, "onlyoverwriteifcontactdatanotpopulated": 2,
         "0": 0, "1": 1, "2": 2}
INSIGHT_TYPES = {t.lower(): t for t in ("cartInsight", "catalog", "consentInsight", "custom", "easyEditorExtensions",
                                         "nostoEmailCampaigns", "orders", "productCategories", "webInsight", "wishList")}


@dataclass
class Knobs:
    """Behaviour of the sandbox; the same names everywhere (DESIGN §7)."""

    latency: float = 0.0  # seconds added to every vendor response
    job_duration: float = 1.0  # real seconds an import takes
    time_scale: float = 1.0  # multiplies vendor intervals (D·engage minute, Retry-After)
    p429: float = 0.0
    p5xx: float = 0.0
    p_drop: float = 0.0
    p_job_fail: float = 0.0
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}; knobs are {sorted(names)}")
        for k, v in changes.items():
            if k == "seed":
                setattr(self, k, None if v is None else int(v))
                continue
            v = float(v)
            if v < 0 or (k.startswith("p") and v > 1):
                raise ValueError(f"{k} must be {'between 0 and 1' if k.startswith('p') else '>= 0'}; got {v}")
            setattr(self, k, v)


@dataclass
class Job:
    vendor: str
    kind: str  # contacts | transactional | insight | qualtrics
    id: str
    created: float
    starts: float  # may be later than created (Qualtrics runs one import per list at a time)
    duration: float
    fails: bool
    rows: int
    writes: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (state path, key)
    info: dict[str, Any] = field(default_factory=dict)
    applied: bool = False

    def progress(self, now: float) -> float:
        if now < self.starts:
            return 0.0
        return 1.0 if self.duration <= 0 else min(1.0, (now - self.starts) / self.duration)

    def done(self, now: float) -> bool:
        return self.progress(now) >= 1.0


class SandboxState:
    """What was stored, with a write count per key, plus the running jobs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.store: dict[str, Any] = self._empty()
        self.jobs: dict[str, Job] = {}
        self.known_contacts: set[str] = set()
        self.tokens: dict[str, float] = {}  # D·engage token → expiry (monotonic)
        self.readonly_tokens: set[str] = set()
        self.dn_busy = False
        self.dn_last_call = -1e18
        self.qx_list_free: dict[str, float] = {}

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"dotdigital": {"address_books": {}, "collections": {}},
                "qualtrics": {"mailing_lists": {}, "batches": {}},
                "dengage": {"contacts": {}}}

    def write(self, path: tuple[str, ...], key: str) -> None:
        node = self.store
        for p in path:
            node = node.setdefault(p, {})
        node[key] = node.get(key, 0) + 1

    def settle(self, now: float) -> None:
        """Apply the writes of every job that has finished (once)."""
        for job in self.jobs.values():
            if not job.applied and job.done(now):
                job.applied = True
                if not job.fails:
                    for path, key in job.writes:
                        self.write(path, key)
                        if path[:2] == ("dotdigital", "address_books"):
                            self.known_contacts.add(key)

    def active(self, kind: str, now: float) -> int:
        return sum(1 for j in self.jobs.values() if j.kind == kind and not j.done(now))


# --- responses in each vendor's shape ---------------------------------------------------


def dd_v2_error(status: int, text: str, code: str) -> JSONResponse:
    return JSONResponse({"message": f"{text} {code}".strip()}, status)


def dd_v3_error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"errorCode": f"insightData:{code}", "description": description}, status)


def qx_meta(status: int) -> dict[str, Any]:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large",
              429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    return {"httpStatus": f"{status} - {reason}", "requestId": str(uuid.uuid4())}


def qx_ok(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"result": result, "meta": qx_meta(200)})


def qx_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"meta": {**qx_meta(status), "error": {"errorMessage": message, "errorCode": code}}}, status)


def dn_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status)


def vendor_of(path: str) -> str | None:
    if path.startswith("/v2/"):
        return "dd2"
    if path.startswith("/insightData/v3/"):
        return "dd3"
    if path.startswith("/API/v3/"):
        return "qx"
    if path.startswith("/rest/"):
        return "dn"
    return None


def error_for(vendor: str, status: int, text: str) -> JSONResponse:
    """A generic error in the vendor's envelope (used by fault injection and guards)."""
    if vendor == "dd2":
        code = {429: "ERROR_APIUSAGE_EXCEEDED", 401: "", 413: "ERROR_IMPORT_FILE_TOO_LARGE"}.get(
            status, "ERROR_SYSTEM_SERVICETEMPORARILYUNAVAILABLE" if status >= 500 else "ERROR_PARAMETER_INVALID")
        return dd_v2_error(status, text, code)
    if vendor == "dd3":
        code = {429: "tooManyRequests", 401: "unauthorized", 413: "requestTooLarge"}.get(
            status, "serviceUnavailable" if status >= 500 else "badRequest")
        return dd_v3_error(status, code, text)
    if vendor == "qx":
        code = {429: "TOO_MANY_REQUESTS", 401: "AUTH_FAILED", 413: "REQUEST_TOO_LARGE"}.get(
            status, "SERVICE_UNAVAILABLE" if status >= 500 else "BAD_REQUEST")
        return qx_error(status, code, text)
    dn_code = {429: R.DN_TOO_MANY_CODE, 401: 401}.get(status, R.DN_CODES["UnexpectedError"] if status >= 500
                                                       else R.DN_CODES["ValidationFails"])
    return dn_error(status, dn_code, text)


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


# --- the app ---------------------------------------------------------------------------


class Sandbox:
    """Holds knobs, state and the Starlette app; ``asgi`` is the callable to serve."""

    def __init__(self, *, credentials: dict[str, tuple[str, ...]] | None = None,
                 contacts: list[str] | None = None, **knobs: Any) -> None:
        self.knobs = Knobs()
        self.knobs.update(knobs)
        self.state = SandboxState()
        self.state.known_contacts.update(c.lower() for c in contacts or [])
        self.credentials = credentials or {}
        self.rng = random.Random(self.knobs.seed)
        self.clock = time.monotonic
        routes = [
            Route("/_sandbox/state", self.get_state, methods=["GET"]),
            Route("/_sandbox/config", self.config, methods=["GET", "POST"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/v2/address-books/{book}/contacts/import/with-merge-option/{merge}", self.dd_contacts_submit,
                  methods=["POST"]),
            Route("/v2/contacts/import/{import_id}", self.dd_contacts_status, methods=["GET"]),
            Route("/v2/contacts/import/{import_id}/report", self.dd_contacts_report, methods=["GET"]),
            Route("/v2/contacts/import/{import_id}/report-faults", self.dd_contacts_faults, methods=["GET"]),
            Route("/v2/contacts/transactional-data/import/{name}", self.dd_td_submit, methods=["POST"]),
            Route("/v2/contacts/transactional-data/import/{import_id}", self.dd_td_status, methods=["GET"]),
            Route("/v2/contacts/transactional-data/import/{import_id}/report", self.dd_td_report, methods=["GET"]),
            Route("/insightData/v3/import", self.dd_insight_submit, methods=["PUT"]),
            Route("/insightData/v3/import/{import_id}", self.dd_insight_status, methods=["GET"]),
            Route("/API/v3/directories/{dir}/transactionbatches", self.qx_batch, methods=["POST"]),
            Route("/API/v3/directories/{dir}/mailinglists/{ml}/transactioncontacts", self.qx_submit, methods=["POST"]),
            Route("/API/v3/directories/{dir}/mailinglists/{ml}/transactioncontacts/{import_id}", self.qx_status,
                  methods=["GET"]),
            Route("/API/v3/directories/{dir}/mailinglists/{ml}/transactioncontacts/{import_id}/summary",
                  self.qx_summary, methods=["GET"]),
            Route("/rest/login", self.dn_login, methods=["POST"]),
            Route("/rest/bulk/contacts", self.dn_bulk, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    # ASGI entry: faults, latency, size guard and error shapes around the routes
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        vendor = vendor_of(scope["path"])
        scale_header = (b"x-sandbox-time-scale", repr(self.knobs.time_scale).encode())

        async def send_scaled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), scale_header]
            await send(message)

        if vendor is None:
            await self.app(scope, receive, send_scaled)
            return
        k = self.knobs
        if k.latency:
            await asyncio.sleep(k.latency)
        roll = self.rng.random
        if k.p429 and roll() < k.p429:
            await self._rate_limited(vendor)(scope, receive, send_scaled)
            return
        if k.p5xx and roll() < k.p5xx:
            await error_for(vendor, 503, "The service is temporarily unavailable.")(scope, receive, send_scaled)
            return
        drop = bool(k.p_drop and roll() < k.p_drop)
        try:
            if drop:  # process the call, then lose the answer: the hard case for clients
                await self.app(scope, receive, self._dropping(send_scaled))
            else:
                await self.app(scope, receive, send_scaled)
        except Exception:  # never leak a traceback; answer in the vendor's shape
            await error_for(vendor, 500, "Unexpected error.")(scope, receive, send_scaled)

    @staticmethod
    def _dropping(send: Send) -> Send:
        async def truncated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != b"content-length"]
                message["headers"] = [*headers, (b"content-length", b"100000")]
                await send(message)
            elif message["type"] == "http.response.body":
                await send({"type": "http.response.body", "body": message.get("body", b"")[:5], "more_body": False})
        return truncated

    def _rate_limited(self, vendor: str) -> Response:
        wait = self.rng.randint(1, 3)
        r = error_for(vendor, 429, "Too many requests; retry later.")
        r.headers["Retry-After"] = str(wait)
        if vendor in ("dd2", "dd3"):
            r.headers["X-RateLimit-Limit"] = str(R.DD_RATE_LIMIT)
            r.headers["X-RateLimit-Remaining"] = "0"
            r.headers["X-RateLimit-Reset"] = str(wait)
            r.headers["X-RateLimit-Scope"] = R.DD_RATE_LIMIT_SCOPE
        return r

    # --- helpers ---

    def now(self) -> float:
        now = self.clock()
        with self.state.lock:
            self.state.settle(now)
        return now

    def _new_job(self, vendor: str, kind: str, rows: int, starts: float | None = None, **info: Any) -> Job:
        now = self.clock()
        job = Job(vendor, kind, str(uuid.uuid4()), now, now if starts is None else starts, self.knobs.job_duration,
                  bool(self.knobs.p_job_fail and self.rng.random() < self.knobs.p_job_fail), rows, info=info)
        self.state.jobs[job.id] = job
        return job

    def _job(self, import_id: str, kind: str, vendor: str) -> Job:
        job = self.state.jobs.get(import_id)
        if job is None or job.kind != kind:
            if vendor == "dd2":
                raise BadRequest(dd_v2_error(R.DD_UNKNOWN_IMPORT_STATUS, "Import not found.", "ERROR_IMPORT_NOT_FOUND"))
            if vendor == "dd3":
                raise BadRequest(dd_v3_error(404, "importNotFound", f"The import request '{import_id}' could not be found!"))
            raise BadRequest(qx_error(404, "NOT_FOUND", f"Import {import_id} was not found."))
        return job

    def _authorised(self, vendor: str, request: Request) -> Response | None:
        h = request.headers
        if vendor in ("dd2", "dd3"):
            user = pw = ""
            auth = h.get("authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user = pw = ""
            fixed = self.credentials.get("dotdigital")
            if not user or not pw or (fixed and (user, pw) != fixed):
                if vendor == "dd2":
                    return dd_v2_error(401, "Authorization has been denied for this request.", "")
                return dd_v3_error(401, "unauthorized", "Authorization has been denied for this request.")
            return None
        if vendor == "qx":
            token = h.get("x-api-token") or h.get("authorization", "").removeprefix("Bearer ").strip()
            fixed = self.credentials.get("qualtrics")
            if not token or (fixed and (token,) != fixed):
                return qx_error(401, "AUTH_FAILED", "Authentication failed: check X-API-TOKEN.")
            return None
        token = h.get("authorization", "").removeprefix("Bearer ").strip()
        exp = self.state.tokens.get(token)
        if exp is None or exp < self.clock():
            return dn_error(401, 401, "Authentication required: log in at /rest/login and send the Bearer token.")
        if token in self.state.readonly_tokens:
            return Response(status_code=403)  # missing DataSpace.Manage: D·engage sends no body
        return None

    async def _body(self, request: Request, limit: int, vendor: str) -> bytes:
        declared = request.headers.get("content-length")
        too_big = error_for(vendor, R.DD_OVERSIZE_STATUS if vendor.startswith("dd") else R.QX_OVERSIZE_STATUS,
                            f"The request body is larger than {limit:,} bytes.")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json(self, request: Request, limit: int, vendor: str) -> Any:
        body = await self._body(request, limit, vendor)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            if vendor == "dd3":
                raise BadRequest(dd_v3_error(400, "badJson", "The request JSON is badly formed")) from None
            raise BadRequest(error_for(vendor, 400, "The request body is not valid JSON.")) from None

    async def _guarded(self, request: Request, vendor: str, handler: Any) -> Response:
        denied = self._authorised(vendor, request)
        if denied is not None:
            return denied
        try:
            return await handler()
        except BadRequest as e:
            return e.response

    # --- sandbox control ---

    async def get_state(self, request: Request) -> Response:
        now = self.now()
        with self.state.lock:
            running = sum(1 for j in self.state.jobs.values() if not j.done(now))
            body = JSONResponse(json.loads(json.dumps(self.state.store)))
        body.headers["X-Sandbox-Running-Jobs"] = str(running)  # lets a reader wait for a settled account
        return body

    async def config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object of knobs")
                contacts = changes.pop("contacts", None)
                self.knobs.update(changes)
                if "seed" in changes:
                    self.rng = random.Random(self.knobs.seed)
                if contacts:
                    self.state.known_contacts.update(str(c).lower() for c in contacts)
            except (ValueError, TypeError) as e:
                return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(asdict(self.knobs))

    async def reset(self, request: Request) -> Response:
        with self.state.lock:
            self.state.__init__()  # type: ignore[misc]
        return JSONResponse({"reset": True})

    # --- Dotdigital contacts ---

    async def dd_contacts_submit(self, request: Request) -> Response:
        return await self._guarded(request, "dd2", lambda: self._dd_contacts_submit(request))

    async def _dd_contacts_submit(self, request: Request) -> Response:
        book_raw, merge = request.path_params["book"], request.path_params["merge"]
        if merge.lower() not in MERGE:
            return dd_v2_error(400, f"mergeOption '{merge}' is not valid.", "ERROR_PARAMETER_INVALID")
        if not book_raw.isdigit() or int(book_raw) in R.DD_UNKNOWN_ADDRESS_BOOKS:
            return dd_v2_error(404, "Error:", "ERROR_ADDRESSBOOK_NOT_FOUND")
        now = self.now()
        text = await self._contacts_file(request)
        if self.state.active("contacts", now) >= R.DD_MAX_ACTIVE_CONTACT_IMPORTS:
            return dd_v2_error(R.DD_TOO_MANY_CONTACT_IMPORTS_STATUS,
                               "You have more than 25 imports running at the same time.",
                               "ERROR_IMPORT_TOOMANYACTIVEIMPORTS")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return dd_v2_error(400, "The file is empty.", "ERROR_IMPORT_UNSUPPORTED_FORMAT")
        header = rows[0]
        lower = [h.strip().lower() for h in header]
        if "email" not in lower:
            return dd_v2_error(400, "The file has no Email column.", "ERROR_NO_EMAIL_COLUMN")
        at = lower.index("email")
        faults: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        counts: Counter[str] = Counter()
        job = self._new_job("dotdigital", "contacts", len(rows) - 1, book=book_raw, header=lower)
        book_state = self.state.store["dotdigital"]["address_books"].get(book_raw, {})
        for row in rows[1:]:
            email = (row[at] if at < len(row) else "").strip().lower()
            if not EMAIL.match(email):
                faults.append(("Invalid Email", row))
                counts["invalidEntries"] += 1
            elif email in seen:
                faults.append(("Duplicate", row))
                counts["duplicateEmails"] += 1
            elif email in R.DD_SEEDED_FAULTS:
                reason = R.DD_SEEDED_FAULTS[email]
                faults.append((reason, row))
                counts[{"Globally Suppressed": "globallySuppressed", "Unsubscribed": "unsubscribed",
                        "Hard bounced": "hardBounced"}[reason]] += 1
            else:
                seen.add(email)
                counts["updatedContacts" if email in book_state else "newContacts"] += 1
                job.writes.append((("dotdigital", "address_books", book_raw), email))
        job.info.update(faults=faults, counts=counts)
        return JSONResponse({"id": job.id, "status": "NotFinished"}, 202)

    async def _contacts_file(self, request: Request) -> str:
        ctype = request.headers.get("content-type", "")
        body = await self._body(request, R.DD_MAX_BODY, "dd2")
        if ctype.startswith("multipart/form-data"):
            m = re.search(r"boundary=\"?([^\";]+)\"?", ctype)
            if not m:
                raise BadRequest(dd_v2_error(400, "file must be valid", ""))
            parts = [p for p in body.split(b"--" + m.group(1).encode())[1:] if not p.startswith(b"--")]
            files = []
            for part in parts:
                head, _, content = part.partition(b"\r\n\r\n")
                if b"filename=" in head:
                    files.append(content[:-2] if content.endswith(b"\r\n") else content)
            if not files:
                raise BadRequest(JSONResponse({"message": "file must be valid"}, 400))
            if len(files) > 1:
                raise BadRequest(dd_v2_error(400, "Only one file may be uploaded.", "ERROR_MULTI_FILE_UPLOAD_NOT_ALLOWED"))
            raw = files[0]
        elif ctype.startswith("application/json"):
            try:
                doc = {k.lower(): v for k, v in json.loads(body).items()}
                raw = base64.b64decode(doc["data"], validate=True)
                if not doc.get("filename"):
                    raise KeyError("filename")
            except (ValueError, KeyError, AttributeError, TypeError, binascii.Error):
                raise BadRequest(dd_v2_error(400, "The file must be {fileName, data (base64)}.",
                                             "ERROR_PARAMETER_INVALID")) from None
        else:
            raise BadRequest(dd_v2_error(400, "Send multipart/form-data or application/json.",
                                         "ERROR_IMPORT_UNSUPPORTED_FORMAT"))
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest(dd_v2_error(400, "The file is not UTF-8 CSV.", "ERROR_IMPORT_UNSUPPORTED_FORMAT")) from None

    def _v2_status(self, job: Job, states: tuple[str, ...]) -> str:
        now = self.now()
        p = job.progress(now)
        if p >= 1.0:
            return states[3] if job.fails else states[2]
        return states[0] if p < 0.1 else states[1]

    async def dd_contacts_status(self, request: Request) -> Response:
        async def go() -> Response:
            job = self._job(request.path_params["import_id"], "contacts", "dd2")
            return JSONResponse({"id": job.id, "status": self._v2_status(job, R.DD_CONTACT_STATES)})
        return await self._guarded(request, "dd2", go)

    def _finished(self, job: Job) -> None:
        if not job.done(self.now()) or job.fails:
            raise BadRequest(dd_v2_error(400, "Import is not processed yet or completed with error.",
                                         "ERROR_IMPORT_REPORT_NOT_FOUND"))

    async def dd_contacts_report(self, request: Request) -> Response:
        async def go() -> Response:
            job = self._job(request.path_params["import_id"], "contacts", "dd2")
            self._finished(job)
            names = ("newContacts", "updatedContacts", "globallySuppressed", "invalidEntries", "duplicateEmails",
                     "blocked", "unsubscribed", "hardBounced", "softBounced", "ispComplaints", "mailBlocked",
                     "domainSuppressed", "pendingDoubleOptin", "failures", "suppressedContacts")
            counts = job.info["counts"]
            return JSONResponse({n: int(counts.get(n, 0)) for n in names})
        return await self._guarded(request, "dd2", go)

    async def dd_contacts_faults(self, request: Request) -> Response:
        async def go() -> Response:
            job = self._job(request.path_params["import_id"], "contacts", "dd2")
            self._finished(job)
            out = io.StringIO(newline="")
            w = csv.writer(out, lineterminator="\r\n")
            w.writerow(["Reason", *job.info["header"]])
            for reason, row in job.info["faults"]:
                w.writerow([reason, *row])
            return Response(b"\xef\xbb\xbf" + out.getvalue().encode(), media_type="application/octet-stream")
        return await self._guarded(request, "dd2", go)

    # --- Dotdigital transactional data (v2) ---

    async def dd_td_submit(self, request: Request) -> Response:
        return await self._guarded(request, "dd2", lambda: self._dd_td_submit(request))

    async def _dd_td_submit(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not V2_COLLECTION.match(name):
            return dd_v2_error(400, f"Collection name '{name}' is not valid.",
                               "ERROR_TRANSACTIONAL_DATA_INVALID_COLLECTION_NAME")
        items = await self._json(request, R.DD_MAX_BODY, "dd2")
        if not isinstance(items, list) or not items:
            return dd_v2_error(400, "Send a non-empty JSON array of {key, contactIdentifier, json}.",
                               "ERROR_TRANSACTIONAL_DATA_VALIDATION_FAILED")
        self.now()
        job = self._new_job("dotdigital", "transactional", len(items))
        faults: list[dict[str, Any]] = []
        seen: set[str] = set()
        for raw in items:
            item = {k.lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}
            key, ident, payload = item.get("key"), item.get("contactidentifier"), item.get("json")
            key_s = str(key) if key is not None else ""
            reason = self._record_fault(key_s, ident, payload, seen, v2=True)
            if reason:
                faults.append({"key": key_s, "reason": reason[0], "detail": reason[1]})
            else:
                seen.add(key_s)
                job.writes.append((("dotdigital", "collections", name), key_s))
        job.info.update(faults=faults, collection=name)
        return JSONResponse({"id": job.id, "status": "NotStarted"}, 202)

    def _record_fault(self, key: str, ident: Any, payload: Any, seen: set[str], v2: bool) -> tuple[str, str] | None:
        if not key or len(key) > 255:
            return "InvalidClientKey", "The key is missing or longer than 255 characters."
        if key in seen:
            return "DuplicateKey", "The key occurs more than once in this import."
        if v2 and isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                return "InvalidJson", "The json value is not valid JSON."
        if not isinstance(payload, dict):
            return "InvalidJson", "The json value must be a JSON object."
        if _nested_array(payload):
            return "JsonContainsNestedArray", "Arrays inside arrays are not supported."
        if ident == "account":
            return None
        if not isinstance(ident, str) or not ident:
            return "InvalidContactIdentifier", "The contact identifier is missing."
        if ident.isdigit():
            return None  # a contact ID; the sandbox accepts any
        if not EMAIL.match(ident):
            return "InvalidContactIdentifier", "The contact identifier is not an email address or contact ID."
        if ident.lower() not in self.state.known_contacts:
            return "ContactEmailDoesNotExist", f"No contact with email {ident}."
        return None

    async def dd_td_status(self, request: Request) -> Response:
        async def go() -> Response:
            job = self._job(request.path_params["import_id"], "transactional", "dd2")
            return JSONResponse({"id": job.id, "status": self._v2_status(job, R.DD_V2_STATES)})
        return await self._guarded(request, "dd2", go)

    async def dd_td_report(self, request: Request) -> Response:
        async def go() -> Response:
            job = self._job(request.path_params["import_id"], "transactional", "dd2")
            self._finished(job)
            faults = job.info["faults"]
            return JSONResponse({"totalItems": job.rows, "totalImported": job.rows - len(faults),
                                 "totalRejected": len(faults), "faults": faults or None})
        return await self._guarded(request, "dd2", go)

    # --- Dotdigital Insight data (v3) ---

    async def dd_insight_submit(self, request: Request) -> Response:
        return await self._guarded(request, "dd3", lambda: self._dd_insight_submit(request))

    async def _dd_insight_submit(self, request: Request) -> Response:
        doc = await self._json(request, R.DD_MAX_BODY, "dd3")
        if not isinstance(doc, dict):
            return dd_v3_error(400, "badJson", "The request JSON is badly formed")
        name: Any = doc.get("collectionName")
        scope: Any = doc.get("collectionScope")
        ctype: Any = doc.get("collectionType")
        records: Any = doc.get("records")
        problems = []
        if not isinstance(name, str) or not V3_COLLECTION.match(name):
            problems.append({"item": "collectionName", "description": "letters, digits, '-' and '_', 2–255 characters"})
        if scope not in ("account", "contact"):
            problems.append({"item": "collectionScope", "description": "account or contact"})
        if not isinstance(ctype, str) or ctype.lower() not in INSIGHT_TYPES:
            problems.append({"item": "collectionType", "description": "one of " + ", ".join(INSIGHT_TYPES.values())})
        if not isinstance(records, list) or not records:
            problems.append({"item": "records", "description": "at least one record"})
        if problems:
            return JSONResponse({"errorCode": "insightData:validationFailed",
                                 "description": "The request is not valid.", "details": problems}, 400)
        now = self.now()
        if self.state.active("insight", now) >= R.DD_MAX_ACTIVE_INSIGHT_IMPORTS:
            return dd_v3_error(R.DD_TOO_MANY_INSIGHT_IMPORTS_STATUS, "tooManyActiveImports",
                               "Your import request cannot be accepted as too many imports are being processed "
                               "for your account. Please try again later.")
        job = self._new_job("dotdigital", "insight", len(records), collection=name)
        failures: list[dict[str, Any]] = []
        seen: set[str] = set()
        for rec in records:
            rec = rec if isinstance(rec, dict) else {}
            key = rec.get("key")
            key_s = str(key) if key is not None else ""
            identity = rec.get("contactIdentity") if isinstance(rec.get("contactIdentity"), dict) else None
            if scope == "contact":
                ident = identity.get("value") if identity else None
                if identity and identity.get("identifier") not in ("email", None):
                    ident = "0"  # contactId / mobileNumber / custom: accepted as existing
            else:
                ident = "account"
            fault = self._record_fault(key_s, ident, rec.get("json"), seen, v2=False)
            if fault:
                owner: dict[str, Any] = {"ownerType": scope}
                if identity:
                    owner["contactIdentity"] = identity
                failures.append({"collectionOwner": owner, "failureReason": fault[0], "details": [fault[1]],
                                 "key": key_s, "json": rec.get("json") if isinstance(rec.get("json"), dict) else {}})
            else:
                seen.add(key_s)
                job.writes.append((("dotdigital", "collections", name), key_s))
        job.info.update(failures=failures)
        return JSONResponse({"importId": job.id}, 202)

    async def dd_insight_status(self, request: Request) -> Response:
        async def go() -> Response:
            import_id = request.path_params["import_id"]
            try:
                uuid.UUID(import_id)
            except ValueError:
                return dd_v3_error(400, "invalidId", f"'{import_id}' is not a valid import id.")
            job = self._job(import_id, "insight", "dd3")
            status = self._v2_status(job, R.DD_INSIGHT_STATES)
            out: dict[str, Any] = {"importId": job.id, "status": status, "collectionName": job.info["collection"]}
            if status == "Finished":
                f = job.info["failures"]
                out["summary"] = {"totalRecords": job.rows, "totalImported": job.rows - len(f), "totalRejected": len(f)}
                if f:  # the spec says minItems 1: omit an empty list
                    out["failures"] = f
            return JSONResponse(out)
        return await self._guarded(request, "dd3", go)

    # --- Qualtrics ---

    async def qx_batch(self, request: Request) -> Response:
        async def go() -> Response:
            doc = await self._json(request, R.QX_MAX_BODY, "qx")
            created = doc.get("creationDate") if isinstance(doc, dict) else None
            if created is not None and not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", str(created)):
                return qx_error(400, "INVALID_DATE", "creationDate must be yyyy-MM-ddTHH:mm:ssZ (24-hour UTC).")
            bid = "BT_" + uuid.uuid4().hex[:15]
            self.state.store["qualtrics"]["batches"].setdefault(bid, {})
            return qx_ok({"id": bid})
        return await self._guarded(request, "qx", go)

    async def qx_submit(self, request: Request) -> Response:
        return await self._guarded(request, "qx", lambda: self._qx_submit(request))

    async def _qx_submit(self, request: Request) -> Response:
        d, ml = request.path_params["dir"], request.path_params["ml"]
        doc = await self._json(request, R.QX_MAX_BODY, "qx")
        contacts: Any = doc.get("contacts") if isinstance(doc, dict) else None
        if not isinstance(contacts, list):
            return qx_error(400, "BAD_REQUEST", "The body must have a contacts array.")
        if len(contacts) > R.QX_MAX_CONTACTS:
            return qx_error(R.QX_OVERSIZE_STATUS, "REQUEST_TOO_LARGE",
                            f"At most {R.QX_MAX_CONTACTS:,} contacts per request; got {len(contacts):,}.")
        meta = doc.get("transactionMeta") or {}
        fields_ = set(meta.get("fields") or []) if isinstance(meta, dict) else set()
        batch = str(meta["batchId"]) if isinstance(meta, dict) and meta.get("batchId") else None
        now = self.now()
        starts = max(now, self.state.qx_list_free.get(ml, now))  # one import per list at a time
        job = self._new_job("qualtrics", "qualtrics", len(contacts), starts=starts)
        self.state.qx_list_free[ml] = starts + job.duration
        unknown = any(u in d or u in ml or (batch and u in batch) for u in R.QX_UNKNOWN_IDS)
        unprocessed: list[int] = []
        invalid: list[str] = []
        added = updated = 0
        seen: set[str] = set()
        book = self.state.store["qualtrics"]["mailing_lists"].get(ml, {})
        for i, c in enumerate(contacts):
            if not isinstance(c, dict) or not _qx_contact_ok(c, fields_):
                unprocessed.append(i)
                continue
            email = c.get("email")
            if email is not None and not EMAIL.match(str(email)):
                invalid.append(email)
                continue
            if unknown:
                continue
            ident = str(email or c.get("extRef") or c.get("phone") or "").lower()
            if not ident:
                unprocessed.append(i)
                continue
            if ident in book or ident in seen:
                updated += 1
            else:
                added += 1
                seen.add(ident)
            job.writes.append((("qualtrics", "mailing_lists", ml), ident))
            if c.get("transactionData") is not None and batch:
                job.writes.append((("qualtrics", "batches", batch), ident))
        transactions = sum(1 for p, _ in job.writes if p[1] == "batches")
        job.info.update(added=added, updated=updated, failed=len(invalid), invalid=invalid,
                        transactions=transactions, dir=d, ml=ml)
        url = f"{request.base_url}API/v3/directories/{d}/mailinglists/{ml}/transactioncontacts/{job.id}"
        return qx_ok({"id": job.id, "contacts": {"unprocessed": unprocessed}, "tracking": {"url": url},
                      "status": R.QX_STATES[0]})

    def _qx_result(self, request: Request) -> dict[str, Any]:
        job = self._job(request.path_params["import_id"], "qualtrics", "qx")
        now = self.now()
        p = job.progress(now)
        status = R.QX_STATES[0] if p < 1 else (R.QX_STATES[2] if job.fails else R.QX_STATES[1])
        done = p >= 1 and not job.fails
        i = job.info
        return {"percentComplete": round(100.0 * p, 1), "status": status,
                "contacts": {"count": {"added": i["added"] if done else 0, "updated": i["updated"] if done else 0,
                                       "failed": i["failed"] if done else 0}},
                "transactions": {"count": {"created": i["transactions"] if done else 0}},
                "_invalid": i["invalid"] if done else []}

    async def qx_status(self, request: Request) -> Response:
        async def go() -> Response:
            result = self._qx_result(request)
            result.pop("_invalid")
            return qx_ok(result)
        return await self._guarded(request, "qx", go)

    async def qx_summary(self, request: Request) -> Response:
        async def go() -> Response:
            result = self._qx_result(request)
            result["invalidEmails"] = result.pop("_invalid")
            return qx_ok(result)
        return await self._guarded(request, "qx", go)

    # --- D·engage ---

    async def dn_login(self, request: Request) -> Response:
        try:
            doc = await self._json(request, 1_000_000, "dn")
        except BadRequest as e:
            return e.response
        if not isinstance(doc, dict):
            return dn_error(400, R.DN_CODES["FieldError"], "Send {userkey, password}.")
        user, pw = doc.get("userkey"), doc.get("password")
        fixed = self.credentials.get("dengage")
        if not user or not pw or (fixed and (user, pw) != fixed):
            return dn_error(401, 401, "Invalid user key or password.")
        token = uuid.uuid4().hex
        if str(user).startswith(R.DN_NO_PERMISSION_PREFIX):
            self.state.readonly_tokens.add(token)
        self.state.tokens[token] = self.clock() + R.DN_TOKEN_TTL * self.knobs.time_scale
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": R.DN_TOKEN_TTL})

    async def dn_bulk(self, request: Request) -> Response:
        return await self._guarded(request, "dn", lambda: self._dn_bulk(request))

    async def _dn_bulk(self, request: Request) -> Response:
        now = self.clock()
        interval = R.DN_INTERVAL * self.knobs.time_scale
        st = self.state
        if st.dn_busy or now - st.dn_last_call < interval:
            wait = max(0.0, interval - (now - st.dn_last_call)) / max(self.knobs.time_scale, 1e-9)
            r = dn_error(429, R.DN_TOO_MANY_CODE, "Too many requests: call bulk upsert once a minute, one at a time.")
            r.headers["Retry-After"] = str(max(1, round(wait)))
            return r
        st.dn_busy = True
        st.dn_last_call = now
        try:
            return await self._dn_bulk_apply(request)
        finally:
            st.dn_busy = False

    async def _dn_bulk_apply(self, request: Request) -> Response:
        doc = await self._json(request, R.DD_MAX_BODY, "dn")
        if not isinstance(doc, dict):
            return dn_error(400, R.DN_CODES["FieldError"], "The body must be a JSON object.")
        columns, datas = doc.get("columns"), doc.get("contactDatas")
        if not isinstance(columns, list) or "contact_key" not in columns:
            return dn_error(400, R.DN_CODES["FieldError"], "columns must include contact_key.")
        if not isinstance(datas, list) or not 1 <= len(datas) <= R.DN_MAX_RECORDS:
            return dn_error(400, R.DN_CODES["ValidationFails"],
                            f"contactDatas must hold 1 to {R.DN_MAX_RECORDS} records.")
        insert = doc.get("insertIfNotExists") is True
        strict = doc.get("throwExceptionIfInvalidRecord") is True
        unknown_cols = [c for c in columns if c not in R.DN_COLUMNS]
        inserted: list[str] = []
        updated: list[str] = []
        errors: list[str] = []
        writes: list[tuple[str, Any]] = []
        existing = self.state.store["dengage"]["contacts"]
        for rec in datas:
            key = rec.get("contact_key") if isinstance(rec, dict) else None
            problem = None
            if not key:
                problem = "contact_key is required."
            elif unknown_cols:
                problem = f"Column(s) {', '.join(unknown_cols)} are not defined for this account."
            elif rec.get("email") is not None and not EMAIL.match(str(rec["email"])):
                problem = "email is not valid."
            elif rec.get("contact_status") not in (None, "A", "P"):
                problem = "contact_status must be A or P."
            elif str(key) not in existing and not insert and str(key) not in [k for k, _ in writes]:
                problem = "Contact does not exist and insertIfNotExists is false."
            if problem:
                errors.append(f"{key}: {problem}")
                continue
            (updated if str(key) in existing else inserted).append(str(key))
            writes.append((str(key), rec))
        if strict and errors:
            return dn_error(400, R.DN_CODES["ValidationFails"], "Invalid records: " + "; ".join(errors[:10]))
        for key, _ in writes:
            self.state.write(("dengage", "contacts"), key)
        return JSONResponse({"code": 0, "message": "Success",
                             "data": {"inserted": inserted, "updated": updated, "errors": errors, "warnings": []}})


def _nested_array(value: Any, in_list: bool = False) -> bool:
    if isinstance(value, list):
        return in_list or any(_nested_array(v, True) for v in value)
    if isinstance(value, dict):
        return any(_nested_array(v, False) for v in value.values())
    return False


def _qx_contact_ok(c: dict[str, Any], fields_: set[str]) -> bool:
    """Qualtrics puts a contact in ``unprocessed`` for bad embedded/transaction data."""
    for name in ("embeddedData", "transactionData"):
        v = c.get(name)
        if v is not None and not isinstance(v, dict):
            return False
    emb = c.get("embeddedData") or {}
    if set(emb) & fields_:
        return False
    values = [*c.values(), *emb.values(), *(c.get("transactionData") or {}).values()]
    return not (R.QX_NULLS_UNPROCESSED and any(v is None for v in values))

