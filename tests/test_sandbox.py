"""The sandbox over real HTTP on loopback, driven with raw httpx requests written from
CONTRACTS.md (not through crmframes' own encoders)."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from crmframes.sandbox import ServedSandbox
from tests.conftest import SPECS

DD = ("apiuser@example.com", "pw")
QX = {"X-API-TOKEN": "token"}


@pytest.fixture(scope="module")
def served() -> Iterator[ServedSandbox]:
    with ServedSandbox(job_duration=0.3, seed=1) as sb:
        yield sb


@pytest.fixture
def sb(served: ServedSandbox) -> ServedSandbox:
    httpx.post(served.url + "/_sandbox/reset")
    served.config(
        latency=0,
        job_duration=0.3,
        time_scale=1,
        p429=0,
        p5xx=0,
        p_drop=0,
        p_job_fail=0,
        seed=1,
        status_mix={},
        variants=[],
    )
    return served


def client(sb: ServedSandbox, **kw: object) -> httpx.Client:
    return httpx.Client(base_url=sb.url, timeout=10, **kw)  # type: ignore[arg-type]


def wait_until(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def dd_schema(name: str, spec: str = "dotdigital-v2-api-swagger.json", patch=None) -> OAS30Validator:
    doc = json.loads(Path(SPECS, spec).read_text())
    components = copy.deepcopy(doc["components"])
    if patch:
        patch(components)
    return OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": components})


CSV = (
    "Email,FirstName,City\r\n"
    "ann@example.com,Ann,London\r\n"
    "not-an-email,Bad,Leeds\r\n"
    "ANN@example.com,Dup,Paris\r\n"
    'suppressed.user@example.com,Sup,"Stratford, ""upon"" Avon"\r\n'
    'ben@example.com,Ben,"Line\nBreak"\r\n'
)


def multipart(csv_text: str, filename: str | None = "c.csv") -> dict[str, object]:
    disp = 'form-data; name="file"' + (f'; filename="{filename}"' if filename else "")
    body = (f"--XyZ\r\nContent-Disposition: {disp}\r\nContent-Type: text/csv\r\n\r\n{csv_text}\r\n--XyZ--\r\n").encode()
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=XyZ"}}


# --- Dotdigital contacts ---------------------------------------------------------------


def test_contacts_import_runs_through_states_and_reports_counts_and_faults(sb):
    with client(sb, auth=DD) as c:
        r = c.post("/v2/address-books/77/contacts/import/with-merge-option/OnlyOverwriteIfNotEmpty", **multipart(CSV))
        assert r.status_code == 202 and r.json()["status"] == "NotFinished"
        dd_schema("ApiContactImport").validate(r.json())
        iid = r.json()["id"]
        early = c.get(f"/v2/contacts/import/{iid}/report")
        assert early.status_code == 400 and early.json()["message"].endswith("ERROR_IMPORT_REPORT_NOT_FOUND")
        assert wait_until(lambda: c.get(f"/v2/contacts/import/{iid}").json()["status"] == "Finished")
        report = c.get(f"/v2/contacts/import/{iid}/report").json()
        dd_schema("ApiContactImportReport").validate(report)
        assert (
            report["newContacts"],
            report["invalidEntries"],
            report["duplicateEmails"],
            report["globallySuppressed"],
        ) == (2, 1, 1, 1)
        faults = c.get(f"/v2/contacts/import/{iid}/report-faults").content
        assert faults.startswith(b"\xef\xbb\xbfReason,email,firstname,city\r\n")
        text = faults.decode("utf-8-sig")
        assert "Invalid Email,not-an-email,Bad,Leeds" in text and "Duplicate,ANN@example.com,Dup,Paris" in text
        assert 'Globally Suppressed,suppressed.user@example.com,Sup,"Stratford, ""upon"" Avon"' in text
    assert sb.state()["dotdigital"]["address_books"] == {"77": {"ann@example.com": 1, "ben@example.com": 1}}


def test_contacts_import_accepts_the_json_base64_form_and_merge_option_numbers(sb):
    body = {"FileName": "c.csv", "data": base64.b64encode(b"email\r\nx@example.com\r\n").decode()}
    with client(sb, auth=DD) as c:
        for option in ("0", "1", "2", "overwrite"):
            assert (
                c.post(f"/v2/address-books/5/contacts/import/with-merge-option/{option}", json=body).status_code == 202
            )


def test_multipart_part_without_filename_is_rejected_as_the_vendor_documents(sb):
    with client(sb, auth=DD) as c:
        r = c.post("/v2/address-books/5/contacts/import/with-merge-option/0", **multipart(CSV, filename=None))
    assert r.status_code == 400 and r.json() == {"message": "file must be valid"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/address-books/5/contacts/import/with-merge-option/Sometimes", 400, "ERROR_PARAMETER_INVALID"),
        ("/v2/address-books/404/contacts/import/with-merge-option/0", 404, "ERROR_ADDRESSBOOK_NOT_FOUND"),
    ],
)
def test_bad_merge_option_and_unknown_address_book_get_v2_errors(sb, path, status, code):
    with client(sb, auth=DD) as c:
        r = c.post(path, **multipart(CSV))
    assert r.status_code == status and r.json()["message"].endswith(code)


def test_missing_email_column_is_refused(sb):
    with client(sb, auth=DD) as c:
        r = c.post("/v2/address-books/5/contacts/import/with-merge-option/0", **multipart("Name\r\nAnn\r\n"))
    assert r.status_code == 400 and r.json()["message"].endswith("ERROR_NO_EMAIL_COLUMN")


def test_the_26th_active_contact_import_is_refused(sb):
    sb.config(job_duration=30)
    with client(sb, auth=DD) as c:
        codes = [
            c.post(
                "/v2/address-books/5/contacts/import/with-merge-option/0", **multipart("Email\r\na@example.com\r\n")
            ).status_code
            for _ in range(26)
        ]
        last = c.post("/v2/address-books/5/contacts/import/with-merge-option/0", **multipart("Email\r\n"))
    assert codes[:25] == [202] * 25 and codes[25] == 400
    assert last.json()["message"].endswith("ERROR_IMPORT_TOOMANYACTIVEIMPORTS")


# --- Dotdigital transactional data (v2) -------------------------------------------------


def test_transactional_data_reports_faults_by_key_and_stores_accepted_records(sb):
    sb.config(contacts=["known@example.com"])
    items = [
        {"key": "o1", "contactIdentifier": "known@example.com", "json": json.dumps({"total": 5})},
        {"key": "o2", "contactIdentifier": "stranger@example.com", "json": json.dumps({"total": 6})},
        {"key": "o1", "contactIdentifier": "known@example.com", "json": json.dumps({"total": 7})},
        {"Key": "o3", "ContactIdentifier": "account", "Json": {"total": 8}},
        {"key": "o4", "contactIdentifier": "known@example.com", "json": "{not json"},
    ]
    with client(sb, auth=DD) as c:
        r = c.post("/v2/contacts/transactional-data/import/orders", json=items)
        assert r.status_code == 202 and r.json()["status"] == "NotStarted"
        dd_schema("ApiTransactionalDataImport").validate(r.json())
        iid = r.json()["id"]
        assert wait_until(lambda: c.get(f"/v2/contacts/transactional-data/import/{iid}").json()["status"] == "Finished")
        report = c.get(f"/v2/contacts/transactional-data/import/{iid}/report").json()
    dd_schema("ApiTransactionalDataImportReport").validate(report)
    assert (report["totalItems"], report["totalImported"], report["totalRejected"]) == (5, 2, 3)
    assert {(f["key"], f["reason"]) for f in report["faults"]} == {
        ("o2", "ContactEmailDoesNotExist"),
        ("o1", "DuplicateKey"),
        ("o4", "InvalidJson"),
    }
    assert sb.state()["dotdigital"]["collections"] == {"orders": {"o1": 1, "o3": 1}}


def test_bad_collection_name_and_unknown_import_id_get_v2_errors(sb):
    with client(sb, auth=DD) as c:
        bad = c.post("/v2/contacts/transactional-data/import/1bad", json=[{"key": "a"}])
        unknown = c.get("/v2/contacts/transactional-data/import/6a4d1d0e-0000-0000-0000-000000000000")
    assert bad.status_code == 400 and bad.json()["message"].endswith("ERROR_TRANSACTIONAL_DATA_INVALID_COLLECTION_NAME")
    assert unknown.status_code == 404 and unknown.json()["message"].endswith("ERROR_IMPORT_NOT_FOUND")


# --- Dotdigital Insight data (v3) -------------------------------------------------------


def _finished_is_a_status(components: dict) -> None:
    # DD-ID's enum says Complete, its own examples say Finished; CONTRACTS tells us to emit Finished [C]
    components["schemas"]["inline_response_200"]["properties"]["status"]["enum"].append("Finished")


def insight(records: list[dict], name: str = "orders") -> dict:
    return {"collectionName": name, "collectionScope": "contact", "collectionType": "orders", "records": records}


def test_insight_import_reports_summary_and_failures(sb):
    sb.config(contacts=["known@example.com"])
    recs = [
        {"key": "1", "contactIdentity": {"identifier": "email", "value": "known@example.com"}, "json": {"a": 1}},
        {"key": 2, "contactIdentity": {"identifier": "email", "value": "nobody@example.com"}, "json": {"a": 2}},
        {"key": "3", "contactIdentity": {"identifier": "email", "value": "known@example.com"}, "json": {"a": [[1]]}},
    ]
    with client(sb, auth=DD) as c:
        r = c.put("/insightData/v3/import", json=insight(recs))
        assert r.status_code == 202
        dd_schema("inline_response_202", "dotdigital-insight-data-service.json").validate(r.json())
        iid = r.json()["importId"]
        status = wait_until(lambda: (s := c.get(f"/insightData/v3/import/{iid}").json())["status"] == "Finished" and s)
    dd_schema("inline_response_200", "dotdigital-insight-data-service.json", _finished_is_a_status).validate(status)
    assert status["summary"] == {"totalRecords": 3, "totalImported": 1, "totalRejected": 2}
    assert {(f["key"], f["failureReason"]) for f in status["failures"]} == {
        ("2", "ContactEmailDoesNotExist"),
        ("3", "JsonContainsNestedArray"),
    }
    assert sb.state()["dotdigital"]["collections"] == {"orders": {"1": 1}}


def test_the_6th_concurrent_insight_import_gets_429_too_many_active_imports(sb):
    sb.config(job_duration=30)
    rec = [{"key": "1", "contactIdentity": {"identifier": "contactId", "value": "7"}, "json": {}}]
    with client(sb, auth=DD) as c:
        codes = [c.put("/insightData/v3/import", json=insight(rec)).status_code for _ in range(6)]
        last = c.put("/insightData/v3/import", json=insight(rec))
    assert codes == [202] * 5 + [429]
    assert last.json()["errorCode"] == "insightData:tooManyActiveImports"


def test_insight_errors_use_the_v3_envelope(sb):
    with client(sb, auth=DD) as c:
        bad_json = c.put("/insightData/v3/import", content=b"{nope", headers={"content-type": "application/json"})
        bad_name = c.put("/insightData/v3/import", json=insight([{"key": "1", "json": {}}], name="1"))
        unknown = c.get("/insightData/v3/import/d7de900d-d337-43f6-b1e1-c8ec73e1a434")
        invalid = c.get("/insightData/v3/import/not-a-guid")
    assert bad_json.status_code == 400 and bad_json.json() == {
        "errorCode": "insightData:badJson",
        "description": "The request JSON is badly formed",
    }
    assert bad_name.status_code == 400 and bad_name.json()["details"][0]["item"] == "collectionName"
    assert unknown.status_code == 404 and unknown.json()["errorCode"] == "insightData:importNotFound"
    assert invalid.status_code == 400 and invalid.json()["errorCode"] == "insightData:invalidId"


# --- Qualtrics ------------------------------------------------------------------------


def test_qualtrics_transaction_import_flags_unprocessed_and_invalid_emails(sb):
    base = "/API/v3/directories/POOL_1"
    with client(sb, headers=QX) as c:
        batch = c.post(
            f"{base}/transactionbatches", json={"transactionIds": [], "creationDate": "2026-11-22T10:00:00Z"}
        )
        assert batch.status_code == 200 and batch.json()["meta"]["httpStatus"] == "200 - OK"
        bid = batch.json()["result"]["id"]
        contacts = [
            {"email": "a@example.com", "embeddedData": {"store": "Leeds"}, "transactionData": {"order": "1"}},
            {"email": "b@example.com", "embeddedData": {"store": None}},  # null: unprocessed
            {"email": "c@example.com", "embeddedData": {"order": "x"}},  # overlaps fields: unprocessed
            {"email": "broken@@example", "transactionData": {"order": "2"}},
            {"email": "d@example.com", "embeddedData": "not an object"},
        ]
        r = c.post(
            f"{base}/mailinglists/CG_1/transactioncontacts",
            json={"transactionMeta": {"batchId": bid, "fields": ["order"]}, "contacts": contacts},
        )
        assert r.status_code == 200
        result = r.json()["result"]
        assert result["contacts"]["unprocessed"] == [1, 2, 4] and result["status"] == "inProgress"
        assert result["tracking"]["url"].endswith(f"{base}/mailinglists/CG_1/transactioncontacts/{result['id']}")
        url = f"{base}/mailinglists/CG_1/transactioncontacts/{result['id']}"
        assert c.get(url).json()["result"]["status"] == "inProgress"
        done = wait_until(lambda: (s := c.get(url).json()["result"])["status"] == "complete" and s)
        summary = c.get(url + "/summary").json()["result"]
    assert done["percentComplete"] == 100.0 and done["contacts"]["count"] == {"added": 1, "updated": 0, "failed": 1}
    assert done["transactions"]["count"] == {"created": 1}
    assert summary["invalidEmails"] == ["broken@@example"]
    state = sb.state()["qualtrics"]
    assert state["mailing_lists"] == {"CG_1": {"a@example.com": 1}} and state["batches"][bid] == {"a@example.com": 1}


def test_qualtrics_limits_5mb_and_10000_contacts(sb):
    url = "/API/v3/directories/POOL_1/mailinglists/CG_1/transactioncontacts"
    with client(sb, headers=QX) as c:
        many = c.post(url, json={"contacts": [{"email": f"{i}@example.com"} for i in range(10_001)]})
        big = c.post(url, json={"contacts": [{"email": "a@example.com", "embeddedData": {"x": "y" * 5_000_000}}]})
        ok = c.post(url, json={"contacts": [{"email": f"{i}@example.com"} for i in range(10_000)]})
    assert many.status_code == 413 and many.json()["meta"]["error"]["errorCode"] == "REQUEST_TOO_LARGE"
    assert big.status_code == 413 and ok.status_code == 200


def test_qualtrics_unknown_list_completes_with_zero_counts(sb):
    url = "/API/v3/directories/POOL_1/mailinglists/CG_UNKNOWN/transactioncontacts"
    with client(sb, headers=QX) as c:
        r = c.post(url, json={"contacts": [{"email": "a@example.com"}]})
        iid = r.json()["result"]["id"]
        done = wait_until(lambda: (s := c.get(f"{url}/{iid}").json()["result"])["status"] == "complete" and s)
    assert done["contacts"]["count"] == {"added": 0, "updated": 0, "failed": 0}


def test_qualtrics_runs_one_import_per_list_at_a_time(sb):
    url = "/API/v3/directories/POOL_1/mailinglists/CG_seq/transactioncontacts"
    with client(sb, headers=QX) as c:
        a = c.post(url, json={"contacts": [{"email": "a@example.com"}]}).json()["result"]["id"]
        b = c.post(url, json={"contacts": [{"email": "b@example.com"}]}).json()["result"]["id"]
        assert wait_until(lambda: c.get(f"{url}/{a}").json()["result"]["status"] == "complete")
        assert c.get(f"{url}/{b}").json()["result"]["percentComplete"] < 100


# --- D·engage -------------------------------------------------------------------------


def dn_login(c: httpx.Client) -> str:
    r = c.post("/rest/login", json={"userkey": "key", "password": "pw"})
    assert r.status_code == 200 and r.json()["expires_in"] == 3600
    return r.json()["access_token"]


def bulk(records: list[dict], columns: list[str] | None = None, insert: bool = True) -> dict:
    return {
        "columns": columns or ["contact_key", "email"],
        "contactDatas": records,
        "insertIfNotExists": insert,
        "throwExceptionIfInvalidRecord": False,
    }


def test_dengage_bulk_upsert_reports_inserted_updated_and_errors(sb):
    sb.config(time_scale=0.001)  # the one-minute interval becomes 60 ms
    with client(sb) as c:
        auth = {"Authorization": "Bearer " + dn_login(c)}
        r = c.post(
            "/rest/bulk/contacts",
            headers=auth,
            json=bulk(
                [
                    {"contact_key": "k1", "email": "a@example.com"},
                    {"contact_key": "k2", "email": "bad"},
                    {"contact_key": None, "email": "c@example.com"},
                ]
            ),
        )
        assert r.status_code == 200 and r.headers["x-sandbox-time-scale"] == "0.001"
        data = r.json()["data"]
        assert r.json()["code"] == 0 and data["inserted"] == ["k1"] and len(data["errors"]) == 2
        time.sleep(0.07)
        r2 = c.post("/rest/bulk/contacts", headers=auth, json=bulk([{"contact_key": "k1", "email": "a@example.com"}]))
        assert r2.json()["data"]["updated"] == ["k1"]
        time.sleep(0.07)
        unknown = c.post(
            "/rest/bulk/contacts",
            headers=auth,
            json=bulk([{"contact_key": "k9", "shoe_size": 9}], columns=["contact_key", "shoe_size"]),
        )
        assert "shoe_size" in unknown.json()["data"]["errors"][0]
    assert sb.state()["dengage"]["contacts"] == {"k1": 2}


def test_dengage_second_call_within_the_interval_gets_429(sb):
    sb.config(time_scale=0.05)  # 3 s interval
    with client(sb) as c:
        auth = {"Authorization": "Bearer " + dn_login(c)}
        first = c.post("/rest/bulk/contacts", headers=auth, json=bulk([{"contact_key": "k1"}]))
        second = c.post("/rest/bulk/contacts", headers=auth, json=bulk([{"contact_key": "k2"}]))
    assert first.status_code == 200 and second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1 and second.json()["code"] == 429


def test_dengage_rejects_bad_batches_and_bad_tokens(sb):
    sb.config(time_scale=0.0001)  # token lifetime 0.36 s
    with client(sb) as c:
        assert c.post("/rest/bulk/contacts", json=bulk([{"contact_key": "k"}])).status_code == 401
        assert c.post("/rest/login", json={"userkey": "", "password": "x"}).status_code == 401
        auth = {"Authorization": "Bearer " + dn_login(c)}
        too_many = c.post(
            "/rest/bulk/contacts", headers=auth, json=bulk([{"contact_key": str(i)} for i in range(1001)])
        )
        assert too_many.status_code == 400 and too_many.json()["code"] == 11
        time.sleep(0.4)
        assert c.post("/rest/bulk/contacts", headers=auth, json=bulk([{"contact_key": "k"}])).status_code == 401


# --- auth, knobs, robustness ----------------------------------------------------------


def test_missing_credentials_get_each_vendors_401(sb):
    with client(sb) as c:
        dd = c.post("/v2/contacts/transactional-data/import/orders", json=[])
        dd3 = c.get("/insightData/v3/import/x")
        qx = c.post("/API/v3/directories/POOL_1/transactionbatches", json={})
    assert dd.status_code == 401 and dd.json() == {"message": "Authorization has been denied for this request."}
    assert dd3.status_code == 401 and dd3.json()["errorCode"] == "insightData:unauthorized"
    assert qx.status_code == 401 and qx.json()["meta"]["httpStatus"] == "401 - Unauthorized"


def test_fixed_credentials_refuse_others():
    with ServedSandbox(credentials={"dotdigital": ("u", "p")}) as sb, client(sb) as c:
        assert c.get("/v2/contacts/import/x", auth=("u", "wrong")).status_code == 401
        assert c.get("/v2/contacts/import/x", auth=("u", "p")).status_code == 404


def test_p429_answers_with_retry_after_and_rate_limit_headers(sb):
    sb.config(p429=1.0)
    with client(sb, auth=DD) as c:
        r = c.get("/v2/contacts/import/x")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 3
    assert r.headers["X-RateLimit-Scope"] == "lowCallRate" and r.headers["X-RateLimit-Remaining"] == "0"
    assert r.json()["message"].endswith("ERROR_APIUSAGE_EXCEEDED")


def test_p5xx_answers_503_in_the_vendor_shape(sb):
    sb.config(p5xx=1.0)
    with client(sb, headers=QX) as c:
        r = c.post("/API/v3/directories/POOL_1/transactionbatches", json={})
    assert r.status_code == 503 and r.json()["meta"]["error"]["errorCode"] == "SERVICE_UNAVAILABLE"


def test_p_drop_processes_the_call_then_loses_the_answer(sb):
    sb.config(p_drop=1.0, time_scale=0.0001)
    with client(sb) as c, pytest.raises(httpx.HTTPError):
        c.post("/rest/login", json={"userkey": "k", "password": "p"})
    sb.config(p_drop=0.0)
    with client(sb, auth=DD) as c:
        body = [{"key": "a", "contactIdentifier": "account", "json": "{}"}]
        sb.config(p_drop=1.0)
        with pytest.raises(httpx.HTTPError):
            c.post("/v2/contacts/transactional-data/import/lost", json=body)
    sb.config(p_drop=0.0)
    assert wait_until(lambda: sb.state()["dotdigital"]["collections"].get("lost") == {"a": 1})


def test_a_settled_state_waits_for_imports_nobody_polls(sb):
    # an import whose answer was lost is never polled, yet it lands: settled reads wait for it
    sb.config(job_duration=0.3)
    with client(sb, auth=DD) as c:
        body = [{"key": "a", "contactIdentifier": "account", "json": "{}"}]
        assert c.post("/v2/contacts/transactional-data/import/late", json=body).status_code in (200, 202)
    assert sb.state()["dotdigital"]["collections"].get("late") is None
    assert sb.state(settled=True)["dotdigital"]["collections"]["late"] == {"a": 1}
    sb.config(job_duration=60)
    with client(sb, auth=DD) as c:
        c.post("/v2/contacts/transactional-data/import/later", json=body)
    with pytest.raises(TimeoutError, match="still running"):
        sb.state(settled=True, timeout=0.1)


def test_p_job_fail_ends_the_job_failed_and_stores_nothing(sb):
    sb.config(p_job_fail=1.0)
    with client(sb, auth=DD) as c:
        iid = c.post("/v2/address-books/5/contacts/import/with-merge-option/0", **multipart(CSV)).json()["id"]
        assert wait_until(lambda: c.get(f"/v2/contacts/import/{iid}").json()["status"] == "Failed")
    assert sb.state()["dotdigital"]["address_books"] == {}


def test_latency_delays_vendor_answers_only(sb):
    sb.config(latency=0.3)
    with client(sb, auth=DD) as c:
        t0 = time.monotonic()
        c.get("/_sandbox/state")
        fast = time.monotonic() - t0
        t0 = time.monotonic()
        c.get("/v2/contacts/import/x")
        slow = time.monotonic() - t0
    assert slow >= 0.3 > fast


def test_config_endpoint_validates_knobs(sb):
    with client(sb) as c:
        assert c.post("/_sandbox/config", json={"p429": 2}).status_code == 400
        assert "unknown knob" in c.post("/_sandbox/config", json={"speed": 1}).json()["error"]
        assert c.post("/_sandbox/config", json={"job_duration": 2}).json()["job_duration"] == 2.0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        (
            "post",
            "/v2/contacts/transactional-data/import/orders",
            {"content": b"[{", "headers": {"content-type": "application/json"}},
            400,
        ),
        (
            "post",
            "/v2/address-books/5/contacts/import/with-merge-option/0",
            {"content": b"x", "headers": {"content-type": "text/plain"}},
            400,
        ),
        ("post", "/v2/contacts/transactional-data/import/orders", {"json": {"not": "an array"}}, 400),
        ("post", "/v2/contacts/transactional-data/import/orders", {"json": [1, "x", None]}, 202),
        ("get", "/v2/contacts/import/unknown-id/report-faults", {}, 404),
        (
            "post",
            "/v2/address-books/5/contacts/import/with-merge-option/0",
            {"content": b"x" * 50_000_001, "headers": {"content-type": "application/json"}},
            413,
        ),
    ],
)
def test_bad_requests_get_the_vendor_error_shape_never_a_traceback(sb, method, path, kwargs, status):
    with client(sb, auth=DD) as c:
        try:
            r = getattr(c, method)(path, **kwargs)
        except httpx.HTTPError:  # a lying content-length may also close the connection
            assert status == 413
            return
    assert r.status_code == status
    assert "Traceback" not in r.text and (status == 202 or "message" in r.json())


def test_an_oversized_body_streamed_without_length_is_refused(sb):
    def chunks():
        for _ in range(60):
            yield b"x" * 1_000_000

    with client(sb, auth=DD) as c:
        r = c.post(
            "/v2/contacts/transactional-data/import/orders",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413 and r.json()["message"].endswith("ERROR_IMPORT_FILE_TOO_LARGE")


def test_dengage_user_without_dataspace_manage_gets_403_with_an_empty_body(sb):
    with client(sb) as c:
        token = c.post("/rest/login", json={"userkey": "readonly-analyst", "password": "pw"}).json()["access_token"]
        r = c.post(
            "/rest/bulk/contacts", headers={"Authorization": f"Bearer {token}"}, json=bulk([{"contact_key": "k"}])
        )
    assert r.status_code == 403 and r.content == b""
    assert sb.state()["dengage"]["contacts"] == {}


def test_the_seed_makes_injected_faults_reproducible():
    def codes(seed: int) -> list[int]:
        with ServedSandbox(p429=0.3, p5xx=0.3, seed=seed) as s, client(s, auth=DD) as c:
            return [c.get("/v2/contacts/import/x").status_code for _ in range(30)]

    first = codes(7)
    assert first == codes(7) and {429, 503, 404} <= set(first)
    assert first != codes(8)


# --- the seeds' rules, checked on what the sandbox receives (CONTRACTS §4–§6) ---------------


def test_qualtrics_puts_contacts_that_break_the_seeds_rules_in_unprocessed(sb):
    base = "/API/v3/directories/POOL_1"
    with client(sb, headers=QX) as c:
        bid = c.post(f"{base}/transactionbatches", json={"transactionIds": []}).json()["result"]["id"]
        contacts = [
            {"email": "a@example.com", "transactionData": {"order": "1"}},
            {"email": "b@example.com", "phone": "+44 1", "transactionData": {"order": "2"}},  # not a contact key
            {"email": "c@example.com", "transactionData": {}},  # must match at least one field
            {"email": "d@example.com", "transactionData": {"other": "x"}},  # matches no field
        ]
        r = c.post(
            f"{base}/mailinglists/CG_1/transactioncontacts",
            json={"transactionMeta": {"batchId": bid, "fields": ["order"]}, "contacts": contacts},
        )
        assert r.json()["result"]["contacts"]["unprocessed"] == [1, 2, 3]
        no_meta = c.post(f"{base}/mailinglists/CG_1/transactioncontacts", json={"contacts": contacts[:1]})
        bad_fields = c.post(
            f"{base}/mailinglists/CG_1/transactioncontacts",
            json={"transactionMeta": {"batchId": bid, "fields": [1]}, "contacts": contacts[:1]},
        )
    assert no_meta.status_code == 400 and "batchId" in no_meta.json()["meta"]["error"]["errorMessage"]
    assert bad_fields.status_code == 400 and "strings" in bad_fields.json()["meta"]["error"]["errorMessage"]


def test_qualtrics_creates_no_transaction_for_a_batch_that_does_not_exist_and_reports_each_row(sb):
    url = "/API/v3/directories/POOL_1/mailinglists/CG_1/transactioncontacts"
    contacts = [{"email": f"{i}@example.com", "transactionData": {"order": str(i)}} for i in range(150)]
    with client(sb, headers=QX) as c:
        iid = c.post(
            url, json={"transactionMeta": {"batchId": "BT_missing", "fields": ["order"]}, "contacts": contacts}
        ).json()["result"]["id"]
        done = wait_until(lambda: (s := c.get(f"{url}/{iid}").json()["result"])["status"] == "complete" and s)
        report = f"/API/v3/directories/POOL_1/imports/api-import/jobs/{iid}/report"
        first = c.get(report).json()
        second = c.get(report, params={"skipToken": first["skipToken"]}).json()
    assert done["contacts"]["count"]["added"] == 150 and done["transactions"]["count"] == {"created": 0}
    entries = first["results"]["importReportEntries"] + second["results"]["importReportEntries"]
    assert len(entries) == 150 and second["skipToken"] is None
    assert {(e["importStatus"], e["transactionStatus"]) for e in entries} == {("success", "failure")}
    assert [e["sourceIndexId"] for e in entries] == [str(i) for i in range(150)]


def test_qualtrics_status_variants_say_done_only_through_the_percentage(sb):
    sb.config(variants=["qualtrics_percent_string", "qualtrics_percent_only"])
    url = "/API/v3/directories/POOL_1/mailinglists/CG_1/transactioncontacts"
    with client(sb, headers=QX) as c:
        iid = c.post(url, json={"contacts": [{"email": "a@example.com"}]}).json()["result"]["id"]
        done = wait_until(lambda: (s := c.get(f"{url}/{iid}").json()["result"])["percentComplete"] == "100.0" and s)
    assert done["status"] == "in progress"


def test_dengage_fails_records_over_the_documented_lengths_and_applies_the_seeds_defaults(sb):
    sb.config(time_scale=0.001)
    with client(sb) as c:
        auth = {"Authorization": "Bearer " + dn_login(c)}
        body = bulk(
            [
                {"contact_key": "k1", "gsm": "1" * 21},
                {"contact_key": "k2", "birth_date": "1984-09-11 00:00"},
                {"contact_key": "k3", "name": "n" * 100},
            ],
            columns=["contact_key", "gsm", "birth_date", "name"],
        )
        r = c.post("/rest/bulk/contacts", headers=auth, json=body)
        assert r.json()["data"]["inserted"] == ["k3"] and len(r.json()["data"]["errors"]) == 2
        time.sleep(0.07)
        strict = {k: v for k, v in body.items() if k != "throwExceptionIfInvalidRecord"}  # default: true
        assert c.post("/rest/bulk/contacts", headers=auth, json=strict).status_code == 400
        time.sleep(0.07)
        renamed = bulk([{"contact_key": "k3", "new_contact_key": "k4"}], columns=["contact_key", "new_contact_key"])
        assert c.post("/rest/bulk/contacts", headers=auth, json=renamed).status_code == 400
        time.sleep(0.07)
        no_insert = {**bulk([{"contact_key": "k9"}]), "insertIfNotExists": None}  # default: false
        assert (
            "does not exist" in c.post("/rest/bulk/contacts", headers=auth, json=no_insert).json()["data"]["errors"][0]
        )


def test_status_mix_and_variants_are_checked_knobs(sb):
    with client(sb) as c:
        assert "unknown endpoint" in c.post("/_sandbox/config", json={"status_mix": {"nope": {"x": 1}}}).json()["error"]
        assert "unknown variant" in c.post("/_sandbox/config", json={"variants": ["shiny"]}).json()["error"]
        ok = c.post(
            "/_sandbox/config",
            json={"status_mix": {"contacts": {"RejectedByWatchdog": 1}}, "variants": ["dengage_top_level"]},
        ).json()
    assert ok["status_mix"] == {"contacts": {"RejectedByWatchdog": 1.0}} and ok["variants"] == ["dengage_top_level"]
    with client(sb, auth=DD) as c:
        iid = c.post("/v2/address-books/5/contacts/import/with-merge-option/0", **multipart(CSV)).json()["id"]
        assert wait_until(lambda: c.get(f"/v2/contacts/import/{iid}").json()["status"] == "RejectedByWatchdog")
        assert c.get(f"/v2/contacts/import/{iid}/report").status_code == 400
    assert sb.state()["dotdigital"]["address_books"] == {}
