"""D·engage in the sandbox: login and the synchronous BulkUpsert of master contacts.

Written from the seed (CONTRACTS §5) and what integrations read (§6): one call a minute,
never two at once; 1 to 1,000 records; only import-enabled columns; the documented
lengths and defaults; an answer naming what was inserted, updated and refused, in one
of two layouts, its errors as texts or objects. Undocumented choices are in ``_rules``.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmframes.sandbox import _rules as R
from crmframes.sandbox.dotdigital import EMAIL

if TYPE_CHECKING:
    from crmframes.sandbox._app import Sandbox

# what the sandbox package reads from each vendor module (``_app.VENDORS``)
KEY = "dengage"  # the connection's key (``crmframes.dengage...`` targets)
CREDENTIALS = ("sandbox-user-key", "sandbox-password")  # any non-empty ones work; these are what ``sb.dengage()`` uses
ENDPOINTS: tuple[str, ...] = ()  # the imports ``status_mix`` can steer
STORE: dict[str, Any] = {"contacts": {}}  # what the account holds, in ``state()["dengage"]``
PREFIXES = ("/rest/",)
VARIANTS = {
    "dengage_top_level": "inserted / updated / errors / warnings at the top level of the answer, as D·engage's "
    "own pre-sales code reads them (CONTRACTS §6), instead of under data",
    "dengage_error_objects": "errors as objects {contact_key, message}",
    "dengage_error_text": "errors as texts that name no contact key",
}


def dn_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status)


def error(status: int, text: str, path: str = "") -> JSONResponse:
    code = {429: R.DN_TOO_MANY_CODE, 401: 401}.get(
        status, R.DN_CODES["UnexpectedError"] if status >= 500 else R.DN_CODES["ValidationFails"]
    )
    return dn_error(status, code, text)


def rate_limit_headers(wait: int) -> dict[str, str]:
    return {}


def authorised(sb: Sandbox, request: Request) -> Response | None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    exp = sb.state.tokens.get(token)
    if exp is None or exp < sb.clock():
        return dn_error(401, 401, "Authentication required: log in at /rest/login and send the Bearer token.")
    if token in sb.state.readonly_tokens:
        return Response(status_code=403)  # missing DataSpace.Manage: D·engage sends no body (DN-PS)
    return None


def _bad_json() -> Response:
    return dn_error(400, R.DN_CODES["FieldError"], "The body must be a JSON object.")


def _too_large() -> Response:
    return error(413, "The request body is too large.")


async def login(sb: Sandbox, request: Request) -> Response:
    from crmframes.sandbox._state import BadRequest

    try:
        doc = await sb.json(request, R.SMALL_BODY, _too_large(), _bad_json())
    except BadRequest as e:
        return e.response
    if not isinstance(doc, dict):
        return dn_error(400, R.DN_CODES["FieldError"], "Send {userkey, password}.")
    user, pw = doc.get("userkey"), doc.get("password")
    fixed = sb.credentials.get("dengage")
    if not user or not pw or (fixed and (user, pw) != fixed):
        return dn_error(401, 401, "Invalid user key or password.")
    token = uuid.uuid4().hex
    if str(user).startswith(R.DN_NO_PERMISSION_PREFIX):
        sb.state.readonly_tokens.add(token)
    sb.state.tokens[token] = sb.clock() + R.DN_TOKEN_TTL * sb.knobs.time_scale
    return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": R.DN_TOKEN_TTL})


async def bulk(sb: Sandbox, request: Request) -> Response:
    now = sb.clock()
    interval = R.DN_INTERVAL * sb.knobs.time_scale
    st = sb.state
    if st.dn_busy or now - st.dn_last_call < interval:
        wait = max(0.0, interval - (now - st.dn_last_call)) / max(sb.knobs.time_scale, 1e-9)
        r = dn_error(429, R.DN_TOO_MANY_CODE, "Too many requests: call bulk upsert once a minute, one at a time.")
        r.headers["Retry-After"] = str(max(1, round(wait)))
        return r
    st.dn_busy = True
    st.dn_last_call = now
    try:
        return await _apply(sb, request)
    finally:
        st.dn_busy = False


def _flag(doc: dict[str, Any], name: str, default: bool) -> bool:
    value = doc.get(name)
    return default if value is None else value is True


async def _apply(sb: Sandbox, request: Request) -> Response:
    doc = await sb.json(request, R.DD_MAX_BODY, _too_large(), _bad_json())
    if not isinstance(doc, dict):
        return _bad_json()
    columns, datas = doc.get("columns"), doc.get("contactDatas")
    if not isinstance(columns, list) or "contact_key" not in columns:
        return dn_error(400, R.DN_CODES["FieldError"], "columns must include contact_key.")
    if not isinstance(datas, list) or not 1 <= len(datas) <= R.DN_MAX_RECORDS:
        return dn_error(400, R.DN_CODES["ValidationFails"], f"contactDatas must hold 1 to {R.DN_MAX_RECORDS} records.")
    # the seed's defaults when a flag is left out: insertIfNotExists false, throwExceptionIfInvalidRecord true
    insert = _flag(doc, "insertIfNotExists", False)
    strict = _flag(doc, "throwExceptionIfInvalidRecord", True)
    if "new_contact_key" in columns and insert:  # the seed forbids the combination [I: a 400]
        return dn_error(
            400, R.DN_CODES["ValidationFails"], "new_contact_key cannot be used with insertIfNotExists=true."
        )
    disabled = [c for c in columns if c not in R.DN_COLUMNS]
    inserted: list[str] = []
    updated: list[str] = []
    errors: list[tuple[str, str]] = []
    writes: list[str] = []
    existing = sb.state.store["dengage"]["contacts"]
    for rec in datas:
        key = rec.get("contact_key") if isinstance(rec, dict) else None
        problem = _record_problem(rec, key, disabled)
        if problem is None and str(key) not in existing and not insert and str(key) not in writes:
            problem = "Contact does not exist and insertIfNotExists is false."
        if problem:
            errors.append((str(key), problem))
            continue
        (updated if str(key) in existing or str(key) in writes else inserted).append(str(key))
        writes.append(str(key))
    if strict and errors:  # all validation happens before any update (seed)
        return dn_error(
            400, R.DN_CODES["ValidationFails"], "Invalid records: " + "; ".join(f"{k}: {p}" for k, p in errors[:10])
        )
    for key in writes:
        sb.state.write(("dengage", "contacts"), key)
    lists = {"inserted": inserted, "updated": updated, "errors": [_error(sb, k, p) for k, p in errors], "warnings": []}
    if sb.variant("dengage_top_level"):
        return JSONResponse(lists)
    return JSONResponse({"code": 0, "message": "Success", "data": lists})


def _record_problem(rec: Any, key: Any, disabled: list[str]) -> str | None:
    if not isinstance(rec, dict) or not key:
        return "contact_key is required."
    if disabled:  # a column that is not import-enabled fails the record [S DN-PS]
        return f"Column(s) {', '.join(disabled)} are not import-enabled for this account."
    if rec.get("email") is not None and not EMAIL.match(str(rec["email"])):
        return "email is not valid."
    for column, limit in R.DN_MAX_CHARS.items():
        if rec.get(column) is not None and len(str(rec[column])) > limit:
            return f"{column} is longer than {limit} characters."
    for column in R.DN_DATE_COLUMNS:
        if rec.get(column) is not None and len(str(rec[column])) > R.DN_DATE_CHARS:
            return f"{column} must be a date (yyyy-MM-dd, at most {R.DN_DATE_CHARS} characters)."
    if rec.get("contact_status") not in (None, "A", "P"):
        return "contact_status must be A or P."
    return None


def _error(sb: Sandbox, key: str, problem: str) -> Any:
    """An ``errors`` element in the shape the variants choose [I: no document shows one]."""
    if sb.variant("dengage_error_objects"):
        return {"contact_key": key, "message": problem}
    if sb.variant("dengage_error_text"):
        return problem
    return f"contact_key '{key}': {problem}"


def holds(store: dict[str, Any]) -> str:
    """What the account holds, in words (``crmframes demo``)."""
    return f"{len(store['contacts'])} D·engage contacts"


def routes(sb: Sandbox) -> list[Route]:
    async def login_endpoint(request: Request) -> Response:  # the login needs no token
        return await login(sb, request)

    bulk_endpoint = sb.endpoint(sys.modules[__name__], bulk)

    return [
        Route("/rest/login", login_endpoint, methods=["POST"]),
        Route("/rest/bulk/contacts", bulk_endpoint, methods=["POST"]),
    ]
