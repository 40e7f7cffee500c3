"""Faults, bad input, secrets and the errors a user meets (DESIGN §6)."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest

import crmframes as cf
from crmframes import _engine
from tests.conftest import sample, sandbox
from tests.test_engine_e2e import CASES, KNOWN, Case

PATIENT = cf.RetryPolicy(attempts=40)  # 50 % of calls fail in the fault test: give each call room


def _run(case: Case, **knobs: object) -> tuple[cf.Job, dict, pl.DataFrame]:
    frame = case.frame()
    with sandbox(contacts=KNOWN, seed=11, job_duration=0.15, time_scale=0.001, **knobs) as sb:
        job = frame.crm.submit(case.target(sb), retry=PATIENT)
        return job, sb.state(settled=True), frame


def _stored(case: Case, state: dict) -> dict[str, int]:
    if case.name == "qualtrics.transaction_contacts":  # an answer lost at batch creation leaves an empty batch
        merged: dict[str, int] = {}
        for batch in state["qualtrics"]["batches"].values():
            for k, n in batch.items():
                merged[k] = merged.get(k, 0) + n
        return merged
    return case.stored(state)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_thirty_percent_429_ten_percent_5xx_and_dropped_answers_end_in_the_same_state(case: Case):
    clean_job, clean, _ = _run(case)
    job, faulty, frame = _run(case, p429=0.3, p5xx=0.1, p_drop=0.1)
    assert job.done and job.status()["retries"].sum() > 0
    got, want = _stored(case, faulty), _stored(case, clean)
    assert set(got) == set(want), "the same rows stored"
    if case.name == "qualtrics.transaction_contacts":
        assert got == want, "no transaction duplicated: a lost Qualtrics answer is never re-sent"
    counts, clean_counts = job.counts(), clean_job.counts()
    # a submit whose answer was lost is in doubt where it may not be repeated, else re-sent
    assert counts.get("accepted", 0) + counts.get("in_doubt", 0) == clean_counts["accepted"]
    if case.name != "qualtrics.transaction_contacts":
        assert counts.get("in_doubt", 0) == 0
    assert sum(counts.values()) == frame.height


# --- bad input: each case gets its clear error or problem rows, and nothing invalid is sent ---


def _orders_target(sb: cf.sandbox) -> cf.Target:  # type: ignore[valid-type]
    return sb.dotdigital().transactional_data("orders", key="order_id", contact="email")


GOOD = {"order_id": ["o1", "o2", "o3"], "email": [KNOWN[0], KNOWN[1], KNOWN[2]], "total": [1.0, 2.0, 3.0]}

ROW_CASES = {
    "null key": ({**GOOD, "order_id": ["o1", None, "o3"]}, {1: "missing_value"}),
    "NaN": ({**GOOD, "total": [1.0, float("nan"), 3.0]}, {1: "not_finite"}),
    "infinity": ({**GOOD, "total": [1.0, 2.0, float("inf")]}, {2: "not_finite"}),
    "bad email": ({**GOOD, "email": [KNOWN[0], "not an email", KNOWN[2]]}, {1: "invalid_email"}),
    "duplicate key": ({**GOOD, "order_id": ["o1", "o1", "o3"]}, {1: "duplicate_key"}),
    "oversized row": ({**GOOD, "note": ["x", "y" * 3000, "z"]}, {1: "row_too_large"}),
}


@pytest.mark.parametrize("name", list(ROW_CASES))
def test_bad_rows_are_reported_invalid_and_never_sent(name):
    data, expected = ROW_CASES[name]
    frame = pl.DataFrame(data)
    with sandbox(contacts=KNOWN, job_duration=0.05, time_scale=0.001) as sb:
        job = frame.crm.submit(_orders_target(sb).with_limits(max_bytes=2000))
        stored = sb.state()["dotdigital"]["collections"].get("orders", {})
    rep = job.report()
    bad = rep.filter(pl.col("outcome") == "invalid")
    assert dict(zip(bad["row"], bad["reason"], strict=True)) == expected
    assert all(d for d in bad["detail"]), "each problem says what to fix"
    sent_keys = set(frame["order_id"].gather(rep.filter(pl.col("outcome") == "accepted")["row"]))
    assert set(stored) == sent_keys and len(sent_keys) == 3 - len(expected)


FRAME_CASES = {
    "missing column": (
        pl.DataFrame({"orderid": ["o1"], "email": [KNOWN[0]]}),
        cf.ColumnNotFoundError,
        r"order_id.*Did you mean 'orderid'",
    ),
    "wrong type": (pl.DataFrame({"order_id": ["o1"], "email": [KNOWN[0]], "blob": [b"\x00"]}), cf.FrameError, "blob"),
    "not a frame": ({"order_id": ["o1"]}, cf.FrameError, "polars DataFrame"),
}


@pytest.mark.parametrize("name", list(FRAME_CASES))
def test_unusable_frames_raise_before_any_request(name):
    frame, error, match = FRAME_CASES[name]
    with sandbox(job_duration=0.05, time_scale=0.001) as sb:
        with pytest.raises(error, match=match):
            cf.submit(frame, _orders_target(sb))
        assert sb.sandbox.state.jobs == {}, "no request reached the vendor"


def test_an_empty_frame_is_a_finished_job_with_an_empty_report_and_no_request():
    with sandbox() as sb:
        job = pl.DataFrame(schema={"order_id": pl.String, "email": pl.String}).crm.submit(_orders_target(sb))
        assert sb.sandbox.state.jobs == {}
    assert job.done and job.report().height == 0 and job.status().height == 0


# --- the errors a user meets: vendor, call, what to do; the job stays resumable ---


def test_vendor_down_longer_than_the_retry_budget_leaves_the_job_resumable():
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.05, time_scale=0.001, p5xx=1.0) as sb:
        t = sb.dotdigital().contacts(21)
        with pytest.raises(
            cf.VendorUnavailableError,
            match=r"Dotdigital refused the submit call \(HTTP 503\).*"
            r"resumable",
        ) as err:
            # the vendor went down after the preflight: the submit itself meets it
            frame.crm.submit(t, retry=cf.RetryPolicy(attempts=3, backoff=0.001), check_account=False)
        job = err.value.job
        assert err.value.transient and set(job.report()["outcome"].cast(pl.String)) == {"invalid", "queued"}
        assert cf.jobs().filter(pl.col("job_id") == job.id)["state"].item() == "error"
        sb.config(p5xx=0.0)  # the vendor is back
        job.wait()
    assert job.done and job.counts()["accepted"] == 196


def test_an_unknown_address_book_names_the_vendor_call_and_code():
    with sandbox(job_duration=0.05) as sb, pytest.raises(cf.VendorError) as err:
        sample("contacts.csv").crm.submit(sb.dotdigital().contacts(999_999), check_account=False)
    e = err.value
    assert (e.vendor, e.call, e.status) == ("Dotdigital", "submit", 404)
    assert "ERROR_ADDRESSBOOK_NOT_FOUND" in str(e) and not e.transient


def test_max_reject_rate_stops_sending_and_the_rest_is_not_sent():
    orders = sample("orders.parquet")
    with sandbox(job_duration=0.05, time_scale=0.001) as sb:  # no known contacts: every row is rejected
        # two at a time, so the policy sees results before everything is sent
        t = _orders_target(sb).with_limits(max_bytes=6_000, max_concurrent=2)
        job = orders.crm.submit(t, max_reject_rate=0.5)
    st = job.status()
    assert st.height > 4 and "not_sent" in st["state"].to_list()
    rep = job.report().filter(pl.col("outcome") == "not_sent")
    assert rep.height > 0 and set(rep["reason"]) == {"max_reject_rate"}
    assert "over max_reject_rate=50%" in rep["detail"][0]


def test_retry_failed_resends_only_rows_whose_failure_may_be_transient():
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.05, time_scale=0.001, p_job_fail=1.0) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(31).with_limits(max_bytes=8000))
        assert set(job.report()["reason"].drop_nulls()) >= {"Failed"}  # the vendor's word
        sb.config(p_job_fail=0.0)
        again = job.retry_failed()
        stored = sb.state()["dotdigital"]["address_books"]["31"]
    # invalid rows are not retried; the suppressed address is rejected by the vendor again
    assert again.report().height == 197 and again.counts() == {"accepted": 196, "rejected": 1}
    assert len(stored) == 196


# --- secrets never reach the journal, logs, reprs or display text ---


def test_secrets_appear_nowhere_after_runs_that_use_them(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    secrets = {"dd": "dd-Secret-8c1f", "qx": "qx-Secret-77aa", "dn": "dn-Secret-3b9e"}
    caplog.set_level(logging.DEBUG)
    creds = {
        "dotdigital": ("apiuser@example.com", secrets["dd"]),
        "qualtrics": (secrets["qx"],),
        "dengage": ("dn-user", secrets["dn"]),
    }
    texts = []
    with sandbox(credentials=creds, job_duration=0.05, time_scale=0.001, p429=0.2) as sb:
        dd = cf.Dotdigital("apiuser@example.com", secrets["dd"], base_url=sb.url)
        qx = cf.Qualtrics(secrets["qx"], base_url=sb.url)
        dn = cf.Dengage("dn-user", secrets["dn"], base_url=sb.url)
        jobs = [
            sample("contacts.csv").crm.submit(dd.contacts(3)),
            sample("survey_transactions.csv").crm.submit(
                qx.transaction_contacts("POOL_a", "CG_a", transaction_fields=["order_id"])
            ),
            sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String)).crm.submit(dn.contacts()),
        ]
        token = _engine.engine().sessions[dn].token
        for j in jobs:
            assert j.counts().get("accepted", 0) > 100
            texts += [
                repr(j),
                j._repr_html_(),
                repr(j.target),
                str(j.status()),
                str(j.report()),
                repr(j.plan),
                j.plan._repr_html_(),
                str(j.failed_rows()),
            ]
        texts += [repr(dd), repr(qx), repr(dn), caplog.text, str(cf.jobs())]
    files = b"".join(p.read_bytes() for p in Path(tmp_path).rglob("*") if p.is_file())
    assert token and caplog.text.count(" finished ") >= 3
    for secret in [*secrets.values(), token]:
        assert secret.encode() not in files, "journal"
        assert not any(secret in t for t in texts), "reprs, logs, display text"
