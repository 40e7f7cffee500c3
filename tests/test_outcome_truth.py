"""Outcome truth: a row is accepted only when the vendor's answer covers it, and every other
outcome says what really happened. One test (or more) per defect found when tried with messy
data and faults; each number is the item of the issue that listed it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

import crmframes as cf
from crmframes._flow import Reply
from crmframes._report import verdicts
from tests.conftest import sample, sandbox
from tests.test_engine_e2e import KNOWN

FAST = {"job_duration": 0.05, "time_scale": 0.001}


# 1. a D·engage row the vendor refused never reads accepted ---------------------------------


def test_1_a_dengage_error_that_names_no_contact_never_leaves_its_row_accepted():
    t = cf.Dengage("u", "p").contacts()
    answer = {"code": 0, "data": {"inserted": ["a"], "updated": [], "errors": ["Record could not be processed."]}}
    out = t.accepted(Reply(200, {}, json.dumps(answer).encode())).outcome
    assert out is not None
    rows, keys = pl.Series([0, 1, 2], dtype=pl.Int64), pl.Series(["a", "b", "c"])
    found = verdicts(out, (), rows, keys)
    got = dict(found.rows.select("row", "outcome").rows())
    assert got == {1: "in_doubt", 2: "in_doubt"}, "one error, two rows not written: neither can be accepted"
    assert "Record could not be processed." in found.rows["detail"][0] and not found.reconciled


def test_1_over_http_rows_the_vendor_refused_without_naming_them_are_rejected_not_accepted():
    frame = sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))
    with sandbox(**FAST, variants=["dengage_error_text"]) as sb:
        t = sb.dengage().contacts(insert_if_not_exists=False)  # unknown contacts are refused
        with pytest.warns(cf.CrmWarning):
            job = frame.crm.submit(t, progress=False)
    assert "accepted" not in job.counts() and job.counts()["rejected"] == 196


# 2. lineage that cannot lie --------------------------------------------------------------------


def test_2_failed_rows_and_retry_failed_refuse_a_source_rewritten_in_another_order(tmp_path):
    path = tmp_path / "contacts.csv"
    frame = sample("contacts.csv")
    frame.write_csv(path)
    with sandbox(**FAST, p_job_fail=1.0) as sb:  # every import fails: every row may be retried
        job = pl.scan_csv(path, try_parse_dates=True).crm.submit(sb.dotdigital().contacts(5), progress=False)
    assert job.report().filter(pl.col("outcome") == "invalid")["row"].to_list() == [17, 42, 77]
    frame.reverse().write_csv(path)  # the same file, rewritten in another order
    with pytest.raises(cf.FrameError, match=r"the frame changed since job .* input row 0 now holds"):
        job.failed_rows()
    with pytest.raises(cf.FrameError, match="the frame changed"):
        job.retry_failed()


def test_2_retry_failed_records_its_parent_and_keeps_the_parents_row_numbers():
    frame = sample("contacts.csv")
    with sandbox(**FAST, p_job_fail=1.0) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(31).with_limits(max_bytes=8000), progress=False)
        sb.config(p_job_fail=0.0)
        again = job.retry_failed()
    assert again is not None and again.parent == job.id
    rep = again.report()
    assert rep.height == 197 and rep["parent_row"].to_list() == [r for r in range(200) if r not in (17, 42, 77)]
    assert rep.filter(pl.col("outcome") == "rejected")["parent_row"].to_list() == [150]
    assert cf.jobs().filter(pl.col("job_id") == again.id)["parent"].item() == job.id
    # a retry of the retry still points at the first job's rows
    assert cf.resume(again.id).report()["parent_row"].to_list() == rep["parent_row"].to_list()


def test_2_nothing_to_retry_journals_no_job():
    with sandbox(**FAST) as sb:
        job = sample("contacts.csv").crm.submit(sb.dotdigital().contacts(5), progress=False)
    before = cf.jobs().height
    with pytest.warns(cf.CrmWarning, match="nothing was retried"):
        assert job.retry_failed() is None
    assert cf.jobs().height == before


# 3. the first valid occurrence of a repeated key is the one sent -----------------------------


def test_3_a_repeated_email_whose_first_row_is_invalid_sends_the_second():
    frame = pl.DataFrame(
        {"email": ["ann@example.com", "ANN@example.com", "bo@example.com"], "SCORE": [float("nan"), 2.0, 3.0]}
    )
    with sandbox(**FAST, data_fields={"SCORE": "Numeric"}) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(8), progress=False)
        stored = sb.state(settled=True)["dotdigital"]["address_books"]["8"]
    rep = job.report()
    assert rep["outcome"].cast(pl.String).to_list() == ["invalid", "accepted", "accepted"]
    assert rep["reason"][0] == "not_finite"
    assert stored == {"ann@example.com": 1, "bo@example.com": 1}
    dup = frame.reverse().crm.validate(cf.Dotdigital("u", "p").contacts(8)).filter(pl.col("code") == "duplicate_key")
    assert dup["row"].to_list() == [2] and "row 1, the first valid row" in dup["problem"][0]


# 4. decimals keep every digit -------------------------------------------------------------------


def test_4_decimals_beyond_float_precision_keep_every_digit_in_every_body(conns):
    dd, qx, dn = conns
    exact = Decimal("12345678901234567.89")
    frame = pl.DataFrame(
        {"key": ["a"], "email": ["a@example.com"], "amount": [exact]}, schema_overrides={"amount": pl.Decimal(38, 2)}
    )
    targets = [
        dd.transactional_data("orders", key="key", contact="email"),
        dd.insight_data("orders", scope="contact", type="orders", key="key", contact="email"),
        dd.contacts(1),
        qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["amount"]),
        dn.contacts(columns=["contact_key", "email", "amount"]),
    ]
    for t in targets:
        f = frame.rename({"key": "contact_key"}) if t.name == "dengage.contacts" else frame
        (body,) = [p.body for p in f.crm.payloads(t)]
        assert b"12345678901234567.89" in body, t.name
        assert b"1.2345678901234568e" not in body, t.name
    doc = json.loads(next(iter(frame.crm.payloads(targets[1]))).body, parse_float=Decimal)
    assert doc["records"][0]["json"]["amount"] == exact, "a JSON number, not a string"


# 5. max_reject_rate for every target ---------------------------------------------------------------


REJECT_ALL: dict[str, tuple[str, dict[str, Any], Any]] = {
    "dotdigital.contacts": (
        "contacts.csv",
        {"contacts": {"Failed": 1}},
        lambda sb: sb.dotdigital().contacts(3).with_limits(max_bytes=3000),
    ),
    "dotdigital.transactional_data": (
        "orders.parquet",
        {"transactional": {"Failed": 1}},
        lambda sb: (
            sb.dotdigital().transactional_data("orders", key="order_id", contact="email").with_limits(max_bytes=6000)
        ),
    ),
    "dotdigital.insight_data": (
        "orders.parquet",
        {"insight": {"Failed": 1}},
        lambda sb: (
            sb.dotdigital()
            .insight_data("orders", scope="contact", type="orders", key="order_id")
            .with_limits(max_bytes=6000)
        ),
    ),
    "qualtrics.transaction_contacts": (
        "survey_transactions.csv",
        {"qualtrics": {"failed": 1}},
        lambda sb: (
            sb.qualtrics()
            .transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id"])
            .with_limits(max_records=20)
        ),
    ),
    "dengage.contacts": (
        "dengage_contacts.csv",
        {},  # every key is new and inserts are off: all refused
        lambda sb: sb.dengage().contacts(insert_if_not_exists=False).with_limits(max_records=30),
    ),
}


@pytest.mark.parametrize("name", list(REJECT_ALL))
def test_5_max_reject_rate_stops_every_target_after_the_first_import_when_every_row_is_rejected(name):
    file, mix, target = REJECT_ALL[name]
    frame = sample(file)
    if name == "dengage.contacts":
        frame = frame.with_columns(pl.col("birth_date").cast(pl.String))
    with sandbox(contacts=KNOWN, **FAST, status_mix=mix) as sb:
        job = frame.crm.submit(target(sb), max_reject_rate=0.2, progress=False)
    st = job.status()
    assert st.height >= 5, "several partitions were planned"
    sent = st.filter(pl.col("state") != "not_sent")
    assert sent.height == 1, f"only the first partition goes before its verdict is known: {st['state'].to_list()}"
    rest = job.report().filter(pl.col("outcome") == "not_sent")
    assert rest.height > 0 and set(rest["reason"]) == {"max_reject_rate"}


# 6. credentials are checked before anything is journalled -------------------------------------------


def test_6_missing_credentials_raise_before_any_journal_row_and_nothing_is_in_doubt(monkeypatch):
    for var in ("DOTDIGITAL_USERNAME", "DOTDIGITAL_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with sandbox(**FAST) as sb:
        dd = cf.Dotdigital(base_url=sb.url)
        with pytest.raises(cf.CredentialsError, match="DOTDIGITAL_USERNAME"):
            sample("contacts.csv").crm.submit(dd.contacts(5), progress=False)
        assert sb.sandbox.state.jobs == {}
    assert cf.jobs().height == 0


# 7. queued, not not_sent, for rows that will be sent ------------------------------------------------


def test_7_right_after_submit_wait_false_rows_are_queued_or_pending_never_not_sent():
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.5, time_scale=0.001) as sb:
        job = frame.crm.submit(
            sb.dotdigital().contacts(7).with_limits(max_bytes=3000, max_concurrent=1), wait=False, progress=False
        )
        early = job.report()
        assert "not_sent" not in set(early["outcome"].cast(pl.String))
        assert "queued" in set(early["outcome"].cast(pl.String))
        assert set(early.filter(pl.col("outcome") == "queued")["reason"]) == {"queued"}
        job.wait()
    assert job.counts() == {"accepted": 196, "rejected": 1, "invalid": 3}


def test_7_jobs_counts_partitions_by_how_they_ended_failed_and_refused_included():
    with sandbox(**FAST, p_job_fail=1.0) as sb:
        failed = sample("contacts.csv").crm.submit(
            sb.dotdigital().contacts(3).with_limits(max_bytes=8000), progress=False
        )
    with sandbox(**FAST) as sb:
        cancelled = (
            sample("contacts.csv")
            .crm.submit(sb.dotdigital().contacts(4).with_limits(max_bytes=8000), wait=False, progress=False)
            .cancel()
        )
        cancelled.wait()
    jobs = cf.jobs()
    row = jobs.filter(pl.col("job_id") == failed.id).row(0, named=True)
    assert row["failed"] == row["partitions"] == failed.status().height and row["not_sent"] == 0
    row = jobs.filter(pl.col("job_id") == cancelled.id).row(0, named=True)
    assert row["not_sent"] == cancelled.status().filter(pl.col("state") == "not_sent").height
    assert row["queued"] == 0 and row["finished"] + row["not_sent"] + row["in_flight"] == row["partitions"]


# 9. every bad option is a ConfigError that names the option, what it got and what is allowed ---------


def _dd() -> cf.Dotdigital:
    return cf.Dotdigital("u", "p")


def _qx() -> cf.Qualtrics:
    return cf.Qualtrics("t", datacenter="fra1")


def _dn() -> cf.Dengage:
    return cf.Dengage("u", "p")


def _submit(**kw: Any) -> Any:
    return lambda: pl.DataFrame({"email": ["a@example.com"]}).crm.submit(_dd().contacts(1), **kw)


BAD_OPTIONS: list[tuple[str, Any]] = [
    # dotdigital.contacts
    ("address_book_id", lambda: _dd().contacts(None)),
    ("merge_option", lambda: _dd().contacts(1, merge_option=[1])),
    ("email", lambda: _dd().contacts(1, email=5)),
    ("fields", lambda: _dd().contacts(1, fields="a")),
    ("fields", lambda: _dd().contacts(1, fields=[1])),
    ("upload", lambda: _dd().contacts(1, upload=None)),
    ("poll_deadline", lambda: _dd().contacts(1, poll_deadline="1h")),
    # dotdigital.transactional_data
    ("collection", lambda: _dd().transactional_data(None, key="k")),
    ("key", lambda: _dd().transactional_data("orders", key=None)),
    ("key", lambda: _dd().transactional_data("orders", key=["order_id"])),
    ("contact", lambda: _dd().transactional_data("orders", key="k", contact=5)),
    ("scope", lambda: _dd().transactional_data("orders", key="k", scope=None)),
    ("fields", lambda: _dd().transactional_data("orders", key="k", fields=5)),
    ("poll_deadline", lambda: _dd().transactional_data("orders", key="k", poll_deadline=0)),
    # dotdigital.insight_data
    ("collection", lambda: _dd().insight_data(5, scope="contact", type="orders", key="k")),
    ("scope", lambda: _dd().insight_data("orders", scope="team", type="orders", key="k")),
    ("type", lambda: _dd().insight_data("orders", scope="contact", type=None, key="k")),
    ("key", lambda: _dd().insight_data("orders", scope="contact", type="orders", key=None)),
    ("identity", lambda: _dd().insight_data("orders", scope="contact", type="orders", key="k", identity=3)),
    ("contact", lambda: _dd().insight_data("orders", scope="contact", type="orders", key="k", contact=5)),
    ("fields", lambda: _dd().insight_data("orders", scope="contact", type="orders", key="k", fields=("a", 2))),
    ("poll_deadline", lambda: _dd().insight_data("orders", scope="contact", type="orders", key="k", poll_deadline=-1)),
    # qualtrics.transaction_contacts
    ("directory_id", lambda: _qx().transaction_contacts(None, "CG_1")),
    ("mailing_list_id", lambda: _qx().transaction_contacts("POOL_1", 5)),
    ("transaction_fields", lambda: _qx().transaction_contacts("POOL_1", "CG_1", transaction_fields=5)),
    ("embedded_fields", lambda: _qx().transaction_contacts("POOL_1", "CG_1", embedded_fields="a")),
    ("batch_id", lambda: _qx().transaction_contacts("POOL_1", "CG_1", batch_id=7)),
    ("poll_deadline", lambda: _qx().transaction_contacts("POOL_1", "CG_1", poll_deadline=None)),
    ("contact_fields", lambda: _qx().transaction_contacts("POOL_1", "CG_1", contact_fields={"phone": "p"})),
    ("contact_fields", lambda: _qx().transaction_contacts("POOL_1", "CG_1", contact_fields=["email"])),
    # dengage.contacts
    ("insert_if_not_exists", lambda: _dn().contacts(insert_if_not_exists=1)),
    ("throw_exception_if_invalid_record", lambda: _dn().contacts(throw_exception_if_invalid_record="no")),
    ("columns", lambda: _dn().contacts(columns="contact_key")),
    ("columns", lambda: _dn().contacts(columns={"contact_key": 5})),
    # connections
    ("region", lambda: cf.Dotdigital("u", "p", region=5)),
    ("base_url", lambda: cf.Dengage("u", "p", base_url=5)),
    ("datacenter", lambda: cf.Qualtrics("t", datacenter="no such place")),
    # with_limits
    ("max_rows", lambda: _dd().contacts(1).with_limits(max_rows=5)),
    ("max_records", lambda: _dn().contacts().with_limits(max_records=0)),
    ("max_records", lambda: _dd().contacts(1).with_limits(max_records=0)),
    ("max_records", lambda: _dn().contacts().with_limits(max_records=True)),
    ("max_bytes", lambda: _qx().transaction_contacts("POOL_1", "CG_1").with_limits(max_bytes=6_000_000)),
    ("max_concurrent", lambda: _dd().contacts(1).with_limits(max_concurrent=26)),
    ("min_interval", lambda: _dn().contacts().with_limits(min_interval=30)),
    # submit
    ("max_reject_rate", _submit(max_reject_rate="20%")),
    ("max_reject_rate", _submit(max_reject_rate=2)),
    ("progress", _submit(progress="loud")),
    ("retry", _submit(retry=5)),
    ("timeout", _submit(timeout=-1)),
    ("sinks", _submit(sinks=[5])),
    ("wait", _submit(wait="yes")),
]


@pytest.mark.parametrize(("option", "build"), BAD_OPTIONS, ids=[f"{i}-{o}" for i, (o, _) in enumerate(BAD_OPTIONS)])
def test_9_every_bad_option_is_a_config_error_naming_the_option(option, build):
    with pytest.raises(cf.ConfigError) as err:
        build()
    text = str(err.value)
    assert option in text, text
    assert "got" in text or "must be one of" in text or "Did you mean" in text, text


def test_9_the_table_covers_every_option_of_every_target():
    import dataclasses

    covered = {o for o, _ in BAD_OPTIONS}
    for name, cls in cf.targets().items():
        options = {f.name for f in dataclasses.fields(cls)} - {"connection", "boundary"}  # type: ignore[arg-type]
        assert options <= covered, (name, options - covered)


# 10. a dropped connection is one line in the sandbox's log, not a traceback ---------------------------


DROPS = """
import polars as pl, crmframes as cf
frame = cf.samples.read("contacts.csv")
with cf.sandbox(job_duration=0.05, time_scale=0.001, p_drop=0.3, seed=5, data_fields=cf.samples.FIELDS) as sb:
    job = frame.crm.submit(sb.dotdigital().contacts(9).with_limits(max_bytes=3000), progress=False,
                           retry=cf.RetryPolicy(attempts=40))
print(job.counts())
"""


def test_10_dropped_answers_log_one_line_each_and_no_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", DROPS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CRMFRAMES_HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "Exception in ASGI" not in out.stderr
    drops = [line for line in out.stderr.splitlines() if "dropped the answer" in line]
    assert drops and len(drops) == len(out.stderr.strip().splitlines()), out.stderr


# 12. the smaller ones ---------------------------------------------------------------------------------


def test_12_validate_shows_row_problems_and_repeated_keys_while_a_column_is_unusable(conns):
    dd = conns[0]
    frame = pl.DataFrame({"email": ["a@example.com", "A@example.com", "bad"], "tags": [["x"], ["y"], ["z"]]})
    codes = set(frame.crm.validate(dd.contacts(1)).select("row", "code").rows())
    assert (None, "unsupported_type") in codes
    assert (1, "duplicate_key") in codes and (2, "invalid_email") in codes


def test_12_the_not_finite_hint_fixes_nan_and_infinity(conns):
    dd = conns[0]
    frame = pl.DataFrame({"order_id": ["a", "b", "c"], "total": [float("nan"), float("inf"), -float("inf")]})
    t = dd.transactional_data("orders", key="order_id", scope="account")
    hint = frame.crm.validate(t)["problem"][0]
    assert "is_finite()" in hint
    fixed = frame.with_columns(pl.when(pl.col("total").is_finite()).then(pl.col("total")))  # the hint, as written
    assert fixed.crm.validate(t).height == 0


def test_12_an_email_with_edge_spaces_says_strip_it(conns):
    dd, _, dn = conns
    frame = pl.DataFrame(
        {"email": [" ann@example.com", "bo@example.com\t", "not an email "], "contact_key": ["1", "2", "3"]}
    )
    for t in (dd.contacts(1), dn.contacts()):
        got = frame.crm.validate(t).select("row", "code").rows()
        # an address bad even without its spaces is both (the first problem says strip, the next what is left)
        assert got == [(0, "email_spaces"), (1, "email_spaces"), (2, "email_spaces"), (2, "invalid_email")], t.name
    assert "str.strip_chars()" in frame.crm.validate(dd.contacts(1))["problem"][0]


def test_12_dengage_repeated_and_empty_contact_keys_are_invalid(conns):
    dn = conns[2]
    frame = pl.DataFrame(
        {"contact_key": ["k1", "k1", "", "  ", "k2"], "email": [None] * 5},
        schema={"contact_key": pl.String, "email": pl.String},
    )
    got = frame.crm.validate(dn.contacts()).select("row", "code").rows()
    assert got == [(1, "duplicate_key"), (2, "empty_key"), (3, "empty_key")]


def test_12_the_journal_is_readable_by_its_owner_only_and_old_jobs_can_be_pruned(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CRMFRAMES_HOME", str(home))
    with sandbox(**FAST) as sb:
        job = sample("contacts.csv").crm.submit(sb.dotdigital().contacts(5), progress=False)
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    assert (home / "jobs" / job.id / "lineage.parquet").exists()
    assert cf.jobs(prune_older_than="1d")["job_id"].to_list() == [job.id], "a recent job stays"
    time.sleep(0.05)
    assert cf.jobs(prune_older_than=0.01).height == 0
    assert not (home / "jobs" / job.id).exists(), "its lineage went with it"
    out = subprocess.run(
        [sys.executable, "-m", "crmframes", "jobs", "--older-than", "30d"],
        capture_output=True,
        text=True,
        env={**os.environ, "CRMFRAMES_HOME": str(home)},
    )
    assert out.returncode == 0 and "pruned 0 job(s)" in out.stdout, out.stderr
    with pytest.raises(cf.ConfigError, match="prune_older_than"):
        cf.jobs(prune_older_than="a while")
