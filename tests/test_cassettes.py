"""The real engine against the vendors' documented example answers, replayed by vcrpy.

The cassettes (tests/cassettes/*.yaml, written by tests/cassettes/build.py) hold each
vendor's documented responses at the real hosts. Each test sends a small frame shaped so
that the documented faults name rows in it, and checks the report maps them back and that
the documented totals reconcile.

Re-recording against real accounts: set CRMFRAMES_RECORD_CASSETTES=1 and the usual
credential variables (DOTDIGITAL_*, QUALTRICS_*, DENGAGE_*, plus CRMFRAMES_TEST_ADDRESS_BOOK,
CRMFRAMES_TEST_DIRECTORY, CRMFRAMES_TEST_MAILING_LIST). Auth headers, the D·engage login
body and its token are filtered out before anything is written. Exact rows are then not
asserted (a real account answers differently), only the invariants.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import vcr

import crmframes as cf
from crmframes import _engine

CASSETTES = Path(__file__).resolve().parent / "cassettes"
RECORD = os.environ.get("CRMFRAMES_RECORD_CASSETTES") == "1"
SECRETS = ("pw-cassette", "qx-cassette-token", "dn-cassette-pw")


def _scrub_request(request: Any) -> Any:
    if request.path.endswith("/rest/login"):
        request.body = None  # holds the user key and password
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string")
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if isinstance(raw, str) and "access_token" in raw:
        doc = json.loads(raw)
        doc["access_token"] = "REDACTED"
        text = json.dumps(doc)
        response["body"]["string"] = text.encode() if isinstance(body, bytes) else text
    return response


VCR = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="all" if RECORD else "none",
    filter_headers=["authorization", "x-api-token", "cookie", "set-cookie"],
    before_record_request=_scrub_request,
    before_record_response=_scrub_response,
)


def cassette(name: str) -> Any:
    return VCR.use_cassette(name, allow_playback_repeats=True)  # polls repeat the same GET


@pytest.fixture(autouse=True)
def _no_vendor_waits() -> Iterator[None]:
    """Real vendors say nothing about a time scale: skip the 5-30 s poll waits in replay."""

    async def instant(seconds: float) -> None:
        await asyncio.sleep(0)

    if RECORD:
        yield
        return
    with _engine.use(_engine.Engine(sleep=instant)):
        yield


def conns() -> tuple[cf.Dotdigital, cf.Qualtrics, cf.Dengage]:
    if RECORD:
        return cf.Dotdigital(), cf.Qualtrics(), cf.Dengage()
    return (
        cf.Dotdigital("apiuser-cassette@apiconnector.com", SECRETS[0]),
        cf.Qualtrics(SECRETS[1], datacenter="fra1"),
        cf.Dengage("dn-cassette-user", SECRETS[2], region="eu"),
    )


def check(job: cf.Job, frame: pl.DataFrame, rejected: dict[int, str]) -> None:
    report = job.report()
    assert report.height == frame.height and sum(job.counts().values()) == frame.height
    assert job.done and job.status()["reconciled"].all(), job.status()
    if not RECORD:
        bad = report.filter(pl.col("outcome") == "rejected")
        assert dict(zip(bad["row"], bad["reason"], strict=True)) == rejected
        assert job.counts()["accepted"] == frame.height - len(rejected)


def no_secrets_in(name: str) -> None:
    text = (CASSETTES / f"{name}.yaml").read_text()
    assert not any(s in text for s in SECRETS) and "authorization" not in text.lower()


def test_dotdigital_contacts_report_faults_map_back_by_email():
    dd, _, _ = conns()
    emails = [f"person{i}@example.com" for i in range(24)] + ["karina.plain@example.com", "demo@apiconnector.com"]
    frame = pl.DataFrame({"email": emails, "firstname": ["A"] * 26})
    book = int(os.environ.get("CRMFRAMES_TEST_ADDRESS_BOOK", "123"))
    with cassette("dotdigital_contacts.yaml"):
        job = frame.crm.submit(dd.contacts(book))
    check(job, frame, {24: "Unsubscribed", 25: "Duplicate"})
    no_secrets_in("dotdigital_contacts")


def test_dotdigital_transactional_report_faults_map_back_by_key():
    dd, _, _ = conns()
    frame = pl.DataFrame(
        {
            "order_id": ["1230AB", "1231AB", "1232AB", "1233AB", "1234AB", "1235AB"],
            "email": [f"buyer{i}@example.com" for i in range(6)],
            "total": [9.5] * 6,
        }
    )
    with cassette("dotdigital_transactional_data.yaml"):
        job = frame.crm.submit(dd.transactional_data("orders", key="order_id", contact="email"))
    check(job, frame, {4: "InvalidJson"})


def test_dotdigital_insight_failures_map_back_by_key_with_their_details():
    dd, _, _ = conns()
    keys = ["24930", "24931", "24932", "24933", "24934", "24935", "24936", "24937", "24938", "24939"]
    frame = pl.DataFrame({"order_id": keys, "email": ["joe.bloggs@emailsim.io"] * 10, "TotalExTax": [56] * 10})
    with cassette("dotdigital_insight_data.yaml"):
        job = frame.crm.submit(dd.insight_data("Orders", scope="contact", type="orders", key="order_id"))
    check(job, frame, {8: "Unknown"})
    if not RECORD:
        detail = job.report().filter(pl.col("row") == 8)["detail"].item()
        assert detail == "Field 'name' is required but was missing; Field 'price' is expected to be a number"


def test_qualtrics_unprocessed_indices_and_invalid_emails_map_back():
    _, qx, _ = conns()
    frame = pl.DataFrame(
        {
            "email": ["a@example.com", "old.address@example.com", "c@example.com", "d@example.com", "e@example.com"],
            "order_id": ["o1", "o2", "o3", "o4", "o5"],
            "amount": ["1", "2", "3", "4", "5"],
        }
    )
    directory = os.environ.get("CRMFRAMES_TEST_DIRECTORY", "POOL_012345678901234")
    mailing_list = os.environ.get("CRMFRAMES_TEST_MAILING_LIST", "CG_012345678901234")
    # the cassette's summary lists this address (in other case) among invalidEmails
    with cassette("qualtrics_transaction_contacts.yaml") as cas:
        t = qx.transaction_contacts(directory, mailing_list, transaction_fields=["order_id", "amount"])
        job = frame.crm.submit(t)
    check(job, frame, {1: "invalid_email", 4: "unprocessed"})
    if not RECORD:  # the batch created first is the one the import used
        assert job.context == "BT_0123456789" and cas.play_count == 5  # the preflight's list lookup first


def test_dengage_errors_map_back_by_contact_key_and_the_token_is_reused():
    _, _, dn = conns()
    frame = pl.DataFrame(
        {
            "contact_key": ["c1", "c2", "c3", "c4"],
            "email": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"],
        }
    )
    with cassette("dengage_contacts.yaml") as cas:
        job = frame.crm.submit(dn.contacts())
    check(job, frame, {3: "error"})
    if not RECORD:
        assert cas.play_count == 2  # one login, one bulk call: the token was not fetched twice
    no_secrets_in("dengage_contacts")
