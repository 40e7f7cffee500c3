"""The round trip over real HTTP against the served sandbox, for every target.

Each case sends a sample file in several partitions and checks three things: the report
has one row per input row whose outcomes add up; the sandbox stored exactly the accepted
rows, each written once; and rejected rows carry the sandbox's own reasons.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

import crmframes as cf
from tests.conftest import sample, sandbox

FAST = {"job_duration": 0.15, "time_scale": 0.001}
KNOWN = [e.lower() for e in sample("contacts.csv")["email"].drop_nulls()]


@dataclass
class Case:
    name: str
    frame: Callable[[], pl.DataFrame]
    target: Callable[[Any], cf.Target]
    stored: Callable[[dict[str, Any]], dict[str, int]]  # the sandbox's write counts for this target
    key: Callable[[pl.DataFrame], pl.Series]  # how a sent row is known in the sandbox state
    rejected: dict[int, str]  # input row → reason the sandbox gives
    min_partitions: int


def _orders() -> pl.DataFrame:
    return sample("orders.parquet")


def _dengage() -> pl.DataFrame:
    return sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))


def _qualtrics_batches(state: dict[str, Any]) -> dict[str, int]:
    (batch,) = state["qualtrics"]["batches"].values()
    return batch


CASES = [
    Case(
        "dotdigital.contacts",
        lambda: sample("contacts.csv"),
        lambda sb: sb.dotdigital().contacts(1001).with_limits(max_bytes=4000),
        lambda st: st["dotdigital"]["address_books"]["1001"],
        lambda f: f["email"].str.to_lowercase(),
        {150: "Globally Suppressed"},
        4,
    ),
    Case(
        "dotdigital.transactional_data",
        _orders,
        lambda sb: (
            sb.dotdigital().transactional_data("orders", key="order_id", contact="email").with_limits(max_bytes=20_000)
        ),
        lambda st: st["dotdigital"]["collections"]["orders"],
        lambda f: f["order_id"].cast(pl.String),
        {5: "ContactEmailDoesNotExist"},
        3,
    ),
    Case(
        "dotdigital.insight_data",
        _orders,
        lambda sb: (
            sb.dotdigital()
            .insight_data("orders_v3", scope="contact", type="orders", key="order_id")
            .with_limits(max_bytes=20_000)
        ),
        lambda st: st["dotdigital"]["collections"]["orders_v3"],
        lambda f: f["order_id"].cast(pl.String),
        {5: "ContactEmailDoesNotExist"},
        3,
    ),
    Case(
        "qualtrics.transaction_contacts",
        lambda: sample("survey_transactions.csv"),
        lambda sb: (
            sb.qualtrics()
            .transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"])
            .with_limits(max_records=40)
        ),
        _qualtrics_batches,
        lambda f: f["email"].str.to_lowercase(),
        {},
        3,
    ),
    Case(
        "dengage.contacts",
        _dengage,
        lambda sb: sb.dengage().contacts().with_limits(max_records=50),
        lambda st: st["dengage"]["contacts"],
        lambda f: f["contact_key"].cast(pl.String),
        {},
        4,
    ),
]


def run_case(case: Case, **knobs: Any) -> tuple[cf.Job, dict[str, Any], pl.DataFrame]:
    frame = case.frame()
    with sandbox(contacts=KNOWN, seed=7, **{**FAST, **knobs}) as sb:
        job = frame.crm.submit(case.target(sb))
        return job, sb.state(settled=True), frame


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_round_trip_stores_exactly_the_accepted_rows_and_reports_every_row(case: Case):
    job, state, frame = run_case(case)
    report = job.report()
    assert report.height == frame.height and report["row"].to_list() == list(range(frame.height))
    counts = job.counts()
    assert sum(counts.values()) == frame.height
    assert counts.get("pending", 0) == counts.get("not_sent", 0) == counts.get("in_doubt", 0) == 0
    assert job.status().height >= case.min_partitions
    assert job.status()["reconciled"].all()

    # invalid rows are exactly the ones validate() finds, and were never sent
    invalid = set(report.filter(pl.col("outcome") == "invalid")["row"])
    assert invalid == set(frame.crm.validate(job.target).drop_nulls("row")["row"])

    accepted = report.filter(pl.col("outcome") == "accepted")["row"]
    stored = case.stored(state)
    expected = set(case.key(frame).gather(accepted))
    assert set(stored) == expected, "the sandbox holds exactly the accepted rows"
    if case.name != "qualtrics.transaction_contacts":
        assert set(stored.values()) == {1}, "each written once"
    else:  # a batch counts transactions per contact: two rows share one address (other case)
        assert sum(stored.values()) == len(accepted)

    rejected = report.filter(pl.col("outcome") == "rejected")
    assert dict(zip(rejected["row"], rejected["reason"], strict=True)) == case.rejected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_twenty_percent_429_and_ten_percent_5xx_end_in_the_same_state(case: Case):
    clean_job, clean, _ = run_case(case)
    job, faulty, _ = run_case(case, p429=0.2, p5xx=0.1)
    assert job.status()["retries"].sum() > 0, "faults were injected and retried"
    assert case.stored(faulty) == case.stored(clean)
    assert job.counts() == clean_job.counts()


def test_insight_imports_never_exceed_five_at_once_even_across_two_jobs():
    """The sandbox answers a 6th concurrent import with tooManyActiveImports (a 'busy' retry)."""
    orders = _orders()
    retries: list[str] = []
    with sandbox(contacts=KNOWN, job_duration=0.4, time_scale=0.001) as sb:
        dd = sb.dotdigital()
        t1 = dd.insight_data("a_orders", scope="contact", type="orders", key="order_id").with_limits(max_bytes=8_000)
        t2 = dd.insight_data("b_orders", scope="contact", type="orders", key="order_id").with_limits(max_bytes=8_000)
        sink = lambda e: retries.append(e.why) if isinstance(e, cf._events.RetryScheduled) else None  # noqa: E731
        started = time.monotonic()
        j1 = orders.crm.submit(t1, wait=False, sinks=[sink])
        j2 = orders.crm.submit(t2, wait=False, sinks=[sink])
        j1.wait(), j2.wait()
        elapsed = time.monotonic() - started
        n = j1.status().height + j2.status().height
    assert n >= 16 and retries == []
    # 5 slots refilled as each frees: about n/5 import durations, far from n of them
    assert elapsed < 0.4 * n / 2


def test_dengage_calls_are_an_interval_apart_and_never_refused():
    frame = _dengage()
    with sandbox(job_duration=0.0, time_scale=0.005) as sb:  # the minute becomes 0.3 s
        job = frame.crm.submit(sb.dengage().contacts().with_limits(max_records=40))
    st = job.status()
    gaps = st.sort("submitted_at")["submitted_at"].diff().drop_nulls().dt.total_microseconds() / 1e6
    assert st.height == 5 and st["retries"].sum() == 0
    assert gaps.min() >= 0.3 * 0.98


def test_wait_false_returns_at_once_and_the_report_shows_pending_then_final_rows():
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.5, time_scale=0.001) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(7).with_limits(max_bytes=8000), wait=False)
        assert not job.done
        job.wait(timeout=0.05)  # a client-side timeout: not failed, still running
        early = job.counts()
        assert not job.done and early.get("accepted", 0) == 0
        assert set(early) <= {"invalid", "pending", "not_sent"}
        job.wait()
    assert job.done and job.counts()["accepted"] == 196


def test_interrupted_job_resumes_and_writes_every_row_once():
    """A cancelled run (what Ctrl-C does) leaves the job paused; wait() finishes it."""
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(9).with_limits(max_bytes=3000), wait=False)
        deadline = time.monotonic() + 10
        while not any(p.state == "submitted" for p in job.state.partitions.values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job._future.cancel()
        while job.state.stopped is None:
            time.sleep(0.01)
        assert job.state.stopped == "paused" and not job.done
        assert job.counts().get("accepted", 0) < 196
        job.wait()
        book = sb.state()["dotdigital"]["address_books"]["9"]
    assert job.done and job.counts()["accepted"] == 196
    assert len(book) == 196 and set(book.values()) == {1}


def test_cancel_stops_sending_and_the_rest_is_not_sent():
    frame = _dengage()
    with sandbox(time_scale=0.01) as sb:  # 0.6 s between calls
        job = frame.crm.submit(sb.dengage().contacts().with_limits(max_records=20), wait=False)
        time.sleep(0.2)
        job.cancel().wait()
        stored = len(sb.state()["dengage"]["contacts"])
    counts = job.counts()
    assert counts["not_sent"] > 0 and counts["accepted"] == stored
    assert set(job.report().filter(pl.col("outcome") == "not_sent")["reason"]) == {"cancelled"}


def test_a_failed_vendor_job_rejects_its_rows_with_the_reason():
    frame = sample("orders.parquet")
    with sandbox(contacts=KNOWN, p_job_fail=1.0, **FAST) as sb:
        job = frame.crm.submit(sb.dotdigital().transactional_data("orders", key="order_id", contact="email"))
    rep = job.report()
    sent = rep.filter(pl.col("outcome") != "invalid")
    assert set(sent["outcome"]) == {"rejected"} and set(sent["reason"]) == {"Failed"}  # the vendor's word
    assert set(job.status()["state"]) == {"failed"}


def test_missing_permission_stops_the_job_with_a_clear_error_and_nothing_is_lost():
    frame = _dengage()
    with sandbox(**FAST) as sb:
        dn = cf.Dengage("readonly-user", "pw", base_url=sb.url)
        with pytest.raises(cf.AuthenticationError, match=r"DataSpace\.Manage") as err:
            frame.crm.submit(dn.contacts())
    job = err.value.job
    assert isinstance(job, cf.Job)
    assert job.report().height == frame.height
    # the job is resumable once the permission is granted: its rows are queued, not "never sent"
    assert set(job.report()["outcome"]) == {"invalid", "queued"}


def test_wrong_credentials_are_refused_at_login_with_the_vendor_named():
    with sandbox(credentials={"dengage": ("u", "right")}, **FAST) as sb:
        dn = cf.Dengage("u", "wrong", base_url=sb.url)
        with pytest.raises(cf.AuthenticationError, match=r"D·engage refused the login call \(HTTP 401\)"):
            _dengage().crm.submit(dn.contacts())


def test_unknown_address_book_stops_with_the_vendors_message():
    with sandbox(**FAST) as sb, pytest.raises(cf.VendorError, match="ERROR_ADDRESSBOOK_NOT_FOUND"):
        sample("contacts.csv").crm.submit(sb.dotdigital().contacts(404), check_account=False)


def test_qualtrics_totals_that_do_not_reconcile_warn_show_in_status_and_leave_rows_in_doubt():
    """Qualtrics accepts an unknown list and reports 0 contacts: the mismatch must show, and no
    row the vendor did not confirm may read accepted."""
    frame = sample("survey_transactions.csv")
    with sandbox(**FAST) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_UNKNOWN1", transaction_fields=["order_id", "amount"])
        with pytest.warns(cf.CrmWarning, match="does not reconcile with what was sent.*119 row.s. it does not confirm"):
            job = frame.crm.submit(t, check_account=False)  # the preflight would refuse the list
    st = job.status()
    assert st["reconciled"].to_list() == [False] and st["vendor_imported"].to_list() == [0]
    assert job.counts() == {"in_doubt": 119, "invalid": 1}
    assert st["in_doubt_rows"].to_list() == [119]
    detail = job.report().filter(pl.col("outcome") == "in_doubt")["detail"][0]
    assert "imported 0" in detail and "does not reconcile" in detail


def test_failed_rows_returns_the_input_rows_with_reasons_ready_to_resubmit():
    frame = sample("contacts.csv")
    with sandbox(**FAST) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(5))
    failed = job.failed_rows()
    assert failed["row"].to_list() == [17, 42, 77, 150]
    assert failed.columns[:4] == ["row", "outcome", "reason", "detail"]
    assert failed.columns[4:] == frame.columns
    bare = job.failed_rows(with_reason=False)
    assert bare.columns == frame.columns and bare.equals(frame[[17, 42, 77, 150]])


def test_lazy_frames_round_trip_like_eager_ones(tmp_path):
    path = tmp_path / "orders.parquet"
    _orders().write_parquet(path)
    with sandbox(contacts=KNOWN, **FAST) as sb:
        t = sb.dotdigital().transactional_data("orders", key="order_id", contact="email").with_limits(max_bytes=20_000)
        lazy = pl.scan_parquet(path).crm.submit(t)
        eager = _orders().crm.submit(t)
    assert lazy.report().equals(eager.report().with_columns(import_id=lazy.report()["import_id"]))
    assert lazy.failed_rows()["row"].to_list() == eager.failed_rows()["row"].to_list()


def test_async_twin_works_from_a_running_loop():
    frame = sample("contacts.csv")

    async def main(url: str) -> cf.Job:
        dd = cf.Dotdigital("u", "p", base_url=url)
        job = await frame.crm.asubmit(dd.contacts(11), wait=False)
        return await job

    with sandbox(**FAST) as sb:
        job = asyncio.run(main(sb.url))
    assert job.done and job.counts()["accepted"] == 196


def test_blocking_submit_works_inside_a_running_event_loop_like_jupyter():
    frame = sample("contacts.csv")

    async def cell(url: str) -> cf.Job:  # a notebook cell runs while the kernel's loop runs
        return frame.crm.submit(cf.Dotdigital("u", "p", base_url=url).contacts(12))

    with sandbox(**FAST) as sb:
        job = asyncio.run(cell(sb.url))
    assert job.counts()["accepted"] == 196


def test_no_reconciliation_warning_when_totals_match():
    with sandbox(**FAST) as sb, warnings.catch_warnings():
        warnings.simplefilter("error", cf.CrmWarning)
        sample("contacts.csv").crm.submit(sb.dotdigital().contacts(13))


CTRL_C = r"""
import os, signal, threading, time
import polars as pl, crmframes as cf
frame = pl.read_csv({path!r})
with cf.sandbox(job_duration=0.5, time_scale=0.001, data_fields=cf.samples.FIELDS) as sb:
    t = sb.dotdigital().contacts(3).with_limits(max_bytes=3000)
    job = cf.Job(frame, t)

    def press_ctrl_c():
        while not any(p.state == "submitted" for p in job.state.partitions.values()):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    try:
        job.wait()
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted:", job.state.stopped, job.done)
    job.wait()
    book = sb.state()["dotdigital"]["address_books"]["3"]
    print("final:", job.counts()["accepted"], len(book), sorted(set(book.values())))
"""


def test_ctrl_c_pauses_the_job_and_wait_resumes_it_without_resending():
    import subprocess
    import sys

    from tests.conftest import DATA

    out = subprocess.run(
        [sys.executable, "-c", CTRL_C.format(path=str(DATA / "contacts.csv"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "interrupted: paused False" in out.stdout
    assert "final: 196 196 [1]" in out.stdout


def test_the_first_dengage_call_after_login_is_paced_from_when_it_really_left():
    frame = _dengage()
    with sandbox(job_duration=0.0, time_scale=0.01, latency=0.05) as sb:  # a slow login must not count
        job = frame.crm.submit(sb.dengage().contacts().with_limits(max_records=50))
    assert job.status()["retries"].sum() == 0
