"""Preflight against the account, over real HTTP against the sandbox: the destination exists,
the credentials work, every column lands in a real field and fits its type — before anything
is sent (DESIGN §6)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from openapi_schema_validator import OAS30Validator

import crmframes as cf
from tests.conftest import SPECS, sample

FAST = {"job_duration": 0.05, "time_scale": 0.001}


def people(**extra: list[Any]) -> pl.DataFrame:
    return pl.DataFrame({"email": ["ann@example.com", "bo@example.com"], **extra})


def account_rows(frame: pl.DataFrame, t: cf.Target) -> dict[str | None, tuple[str, str]]:
    found = frame.crm.validate(t, account=True).filter(pl.col("row").is_null())
    return {c: (code, text) for c, code, text in found.select("column", "code", "problem").rows()}


def test_a_misspelt_column_is_flagged_with_the_field_it_meant():
    with cf.sandbox(**FAST) as sb:
        got = account_rows(people(lastnme=["A", "B"]), sb.dotdigital().contacts(5))
    code, text = got["lastnme"]
    assert code == "unmapped_column" and "Did you mean 'LASTNAME'?" in text
    assert "drop its values without a word" in text and "fields={'FIELD': 'lastnme'}" in text


def test_a_column_matching_a_field_in_another_case_is_accepted_and_a_plain_validate_asks_nothing():
    with cf.sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(5)
        assert account_rows(people(firstname=["A", "B"], PostCode=["X", "Y"]), t) == {}
        sb.stop()  # nothing answers now: an offline validate must not need it
        assert people(nickname=["A", "B"]).crm.validate(t).height == 0


def test_a_column_whose_type_cannot_become_the_fields_type_is_flagged():
    with cf.sandbox(**FAST, data_fields={"BIRTHDAY": "Date", "POINTS": "Numeric", "VIP": "Boolean"}) as sb:
        frame = people(BIRTHDAY=[True, False], POINTS=[dt.date(2020, 1, 1)] * 2, VIP=[True, False])
        got = account_rows(frame, sb.dotdigital().contacts(5))
        fine = account_rows(
            people(BIRTHDAY=[dt.date(2020, 1, 1)] * 2, POINTS=[1.5, 2], VIP=["yes", "no"]), sb.dotdigital().contacts(5)
        )
    assert (
        got["BIRTHDAY"][0] == "type_mismatch" and "Boolean, but the data field 'BIRTHDAY' is Date" in got["BIRTHDAY"][1]
    )
    assert got["POINTS"][0] == "type_mismatch" and "VIP" not in got
    assert fine == {}


def test_a_missing_address_book_is_refused_by_submit_with_its_id_and_nothing_is_sent():
    with cf.sandbox(**FAST) as sb:
        before = sb.state()
        with pytest.raises(cf.AccountError, match="no address book 404 in this account") as err:
            people().crm.submit(sb.dotdigital().contacts(404), progress=False)
        assert sb.state() == before and sb.sandbox.state.jobs == {}
    assert err.value.problems["code"].to_list() == ["unknown_destination"]
    assert cf.jobs().height == 0, "nothing journalled either"


def test_a_missing_mailing_list_is_refused_by_submit_with_its_id_and_nothing_is_sent():
    with cf.sandbox(**FAST) as sb:
        before = sb.state()
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_UNKNOWN7", transaction_fields=["order_id"])
        with pytest.raises(cf.AccountError, match="no mailing list CG_UNKNOWN7 in directory POOL_demo"):
            sample("survey_transactions.csv").crm.submit(t, progress=False)
        assert sb.state() == before and sb.sandbox.state.jobs == {}
        assert sb.state()["qualtrics"]["batches"] == {}, "not even the transaction batch was made"


def test_unmapped_columns_stop_submit_unless_check_account_is_false():
    with cf.sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(5)
        with pytest.raises(cf.AccountError, match=r"(?s)'lastnme' matches no contact data field.*check_account=False"):
            people(lastnme=["A", "B"]).crm.submit(t, progress=False)
        job = people(lastnme=["A", "B"]).crm.submit(t, progress=False, check_account=False)
        held = sb.state(settled=True)["dotdigital"]["contact_data"]
    assert job.counts() == {"accepted": 2}
    assert held["ann@example.com"] == {}, "the vendor dropped the column without a word: the preflight's point"


def test_fields_maps_a_column_onto_a_field_without_renaming_the_frame_and_the_contact_holds_it():
    frame = people(surname=["Smith", "Jones"], POSTCODE=["N1", "E2"])
    with cf.sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(5, fields={"LASTNAME": "surname"})
        assert account_rows(frame, t) == {}
        assert "LASTNAME ← surname" in repr(frame.crm.plan(t))
        job = frame.crm.submit(t, progress=False)
        held = sb.state(settled=True)["dotdigital"]["contact_data"]
    assert job.counts() == {"accepted": 2}
    assert held["ann@example.com"] == {"LASTNAME": "Smith", "POSTCODE": "N1"}
    assert held["bo@example.com"]["LASTNAME"] == "Jones"


def test_dengage_and_qualtrics_map_their_named_fields_without_renaming_the_frame(conns):
    _, qx, dn = conns
    frame = pl.DataFrame({"customer_id": ["k1"], "mail": ["ann@example.com"], "first": ["Ann"], "shoe": [42]})
    t = dn.contacts(columns={"contact_key": "customer_id", "email": "mail", "name": "first"})
    with pytest.raises(cf.FrameError, match="'shoe' is not a column of D·engage's standard import template"):
        frame.crm.plan(t)
    (record,) = json.loads(next(iter(frame.drop("shoe").crm.payloads(t))).body)["contactDatas"]
    assert record == {"contact_key": "k1", "email": "ann@example.com", "name": "Ann"}
    q = qx.transaction_contacts(
        "POOL_1", "CG_1", contact_fields={"email": "mail", "firstName": "first", "extRef": "customer_id"}
    )
    (contact,) = json.loads(next(iter(frame.crm.payloads(q))).body)["contacts"]
    assert contact == {"firstName": "Ann", "email": "ann@example.com", "extRef": "k1", "embeddedData": {"shoe": "42"}}


def test_refused_credentials_are_a_problem_row_and_stop_submit_naming_the_variables():
    creds = {"dengage": ("right-user", "right-pw")}
    frame = pl.DataFrame({"contact_key": ["k1"]})
    with cf.sandbox(**FAST, credentials=creds) as sb:
        dn = cf.Dengage("right-user", "wrong-pw", base_url=sb.url)
        got = account_rows(frame, dn.contacts())
        assert got[None][0] == "credentials_refused" and "DENGAGE_USER_KEY and DENGAGE_PASSWORD" in got[None][1]
        with pytest.raises(cf.AuthenticationError, match="set DENGAGE_USER_KEY and DENGAGE_PASSWORD"):
            frame.crm.submit(dn.contacts(), progress=False)
    assert cf.jobs().height == 0


def test_an_insight_collection_of_another_scope_or_type_is_refused_a_new_one_is_fine():
    frame = sample("orders.parquet").head(20)
    known = [e.lower() for e in frame["email"]]
    with cf.sandbox(**FAST, contacts=known) as sb:
        dd = sb.dotdigital()
        first = frame.crm.submit(
            dd.insight_data("orders_v3", scope="contact", type="orders", key="order_id"), progress=False
        )
        assert first.counts()["accepted"] > 0
        clash = dd.insight_data("orders_v3", scope="account", type="catalog", key="order_id")
        got = account_rows(frame.drop("email"), clash)
        assert got[None][0] == "collection_conflict" and "scope 'contact' and type 'orders'" in got[None][1]
        assert account_rows(frame, dd.insight_data("fresh_one", scope="contact", type="orders", key="order_id")) == {}


def test_account_answers_are_cached_a_minute_for_submits_and_fresh_for_validate():
    with cf.sandbox(**FAST, data_fields={"CITY": "String"}) as sb:
        t = sb.dotdigital().contacts(5)
        frame = people(CITY=["Leeds", "York"])
        assert frame.crm.submit(t, progress=False).counts() == {"accepted": 2}
        del sb.sandbox.state.data_fields["city"]  # the account changes behind the cache
        assert frame.crm.submit(t, progress=False).counts() == {"accepted": 2}, "a loop of submits asks once"
        assert account_rows(frame, t)["CITY"][0] == "unmapped_column", "an explicit validate asks again"
        with pytest.raises(cf.AccountError):
            frame.crm.submit(t, progress=False)


def test_the_cli_validates_against_the_account():
    with cf.sandbox(**FAST) as sb:
        path = Path(sb.url.split("//")[1].replace(":", "_") + ".csv")
        try:
            people(lastnme=["A", "B"]).write_csv(path)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "crmframes",
                    "validate",
                    str(path),
                    "--to",
                    "dotdigital.contacts",
                    "-o",
                    "address_book_id=5",
                    "--account",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env={
                    "DOTDIGITAL_USERNAME": "u",
                    "DOTDIGITAL_PASSWORD": "p",
                    "DOTDIGITAL_BASE_URL": sb.url,
                    "PATH": "/usr/bin:/bin",
                },
            )
            offline = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "crmframes",
                    "validate",
                    str(path),
                    "--to",
                    "dotdigital.contacts",
                    "-o",
                    "address_book_id=5",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            path.unlink(missing_ok=True)
    assert out.returncode == 1 and "unmapped_column" in out.stdout, out.stdout + out.stderr
    assert offline.returncode == 0 and "no problems" in offline.stdout


# --- contract: the account calls and the sandbox's answers against Dotdigital's own documents -------


def _schema(spec: str, schema: dict[str, Any]) -> OAS30Validator:
    doc = json.loads(Path(SPECS, spec).read_text())
    return OAS30Validator({**schema, "components": copy.deepcopy(doc["components"])})


V2 = "dotdigital-v2-api-swagger.json"
V3 = "dotdigital-insight-data-service.json"


def test_the_account_answers_match_dotdigitals_openapi_documents():
    with (
        cf.sandbox(**FAST, data_fields={"VIP": "Boolean"}) as sb,
        httpx.Client(base_url=sb.url, auth=("u", "p"), timeout=10) as c,
    ):
        book = c.get("/v2/address-books/5")
        missing = c.get("/v2/address-books/404")
        fields = c.get("/v2/data-fields")
        account = c.get("/v2/account-info")
        created = c.post("/v2/data-fields", json={"name": "SHOE_SIZE", "type": "Numeric", "visibility": "Private"})
        again = c.post("/v2/data-fields", json={"name": "shoe_size", "type": "Numeric"})
        collections = c.get("/v2/contacts/transactional-data-collections")
        insight = c.get("/insightData/v3/collections")
    _schema(V2, {"$ref": "#/components/schemas/ApiAddressBook"}).validate(book.json())
    assert missing.status_code == 404 and missing.json()["message"].endswith("ERROR_ADDRESSBOOK_NOT_FOUND")
    _schema(V2, {"type": "array", "items": {"$ref": "#/components/schemas/ApiDataField"}}).validate(fields.json())
    assert {f["name"] for f in fields.json()} == {"FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE", "VIP"}
    _schema(V2, {"$ref": "#/components/schemas/ApiAccount"}).validate(account.json())
    assert created.status_code == 201
    _schema(V2, {"$ref": "#/components/schemas/ApiDataField"}).validate(created.json())
    assert again.status_code == 400 and "ERROR_NON_UNIQUE_DATAFIELD" in again.json()["message"]
    _schema(V2, {"type": "array", "items": {"$ref": "#/components/schemas/ApiTransactionalDataCollection"}}).validate(
        collections.json()
    )
    _schema(V3, {"type": "array", "items": {"$ref": "#/components/schemas/collectionSummary"}}).validate(insight.json())


def test_the_preflight_asks_only_documented_paths_and_a_created_field_body_matches_the_schema():
    """Every account call the client makes is a path and method in Dotdigital's documents."""
    from crmframes._flow import Call

    v2 = json.loads(Path(SPECS, V2).read_text())["paths"]
    v3 = json.loads(Path(SPECS, V3).read_text())["paths"]
    dd = cf.Dotdigital("u", "p")
    frame = people(FIRSTNAME=["A", "B"])
    for t in (
        dd.contacts(5),
        dd.transactional_data("orders", key="email", scope="account"),
        dd.insight_data("orders", scope="contact", type="orders", key="email"),
    ):
        flow = t.account_checks(frame.schema)
        assert flow is not None
        step = flow.send(None)
        while True:
            assert isinstance(step, Call)
            req = step.request
            path = req.path.replace("/5", "/{id}")
            assert path in v2 or path in v3, path
            assert req.method.lower() in (v2.get(path) or v3.get(path)), (req.method, path)
            answer = {
                "/v2/address-books/{id}": {"id": 5, "name": "b"},
                "/v2/data-fields": [],
                "/v2/contacts/transactional-data-collections": [],
                "/insightData/v3/collections": [],
            }[path]
            from crmframes._flow import Reply

            try:
                step = flow.send(Reply(200, {}, json.dumps(answer).encode()))
            except StopIteration:
                break
