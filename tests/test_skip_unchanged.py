"""Send only what changed (DESIGN §10): re-runs send new and changed rows, nothing else.

Over real HTTP against the sandbox, whose write counts per key say exactly what was sent
again; the re-run happens in a new process, as a daily notebook run does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crmframes as cf
from crmframes import _baseline
from tests.conftest import sample, sandbox
from tests.test_crash_resume import connection_for, frame_for, run_child_until_frozen

FAST = {"job_duration": 0.05, "time_scale": 0.001}

RERUN = """
import sys, polars as pl, crmframes as cf
url, path = sys.argv[1:3]
frame = pl.read_parquet(path)
from crmframes.sandbox import CREDS
t = cf.Dotdigital(*CREDS["dotdigital"], base_url=url).contacts(9).with_limits(max_bytes=4000)
job = frame.crm.submit(t, skip_unchanged=True, progress=False)
print(sorted(job.counts().items()), job.status().height)
"""


def _contacts() -> pl.DataFrame:
    return sample("contacts.csv")


def test_a_rerun_in_a_new_process_sends_only_changed_and_new_rows_and_a_third_sends_nothing(tmp_path):
    # without row 77 (row 10's address in capitals): which of two repeats is sent would turn on the order
    first = _contacts().filter(pl.int_range(pl.len()) != 77)
    with sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(9).with_limits(max_bytes=4000)
        job = first.crm.submit(t, skip_unchanged=True, progress=False)
        assert job.counts() == {"accepted": 196, "rejected": 1, "invalid": 2}
        assert cf.baseline(t).height == 196, "the rejected row never enters the baseline"
        # the next day: two changed rows, two new rows, another order, an unrelated column dropped
        changed = first.with_columns(
            pl.when(pl.col("email").is_in(["quinn.khan2@example.org", "nora.rossi3@mail.example.net"]))
            .then(pl.lit("Changed"))
            .otherwise(pl.col("FIRSTNAME"))
            .alias("FIRSTNAME")
        )
        new = first.head(2).with_columns(pl.Series("email", ["new.one@example.com", "new.two@example.com"]))
        second = pl.concat([changed, new]).sample(fraction=1.0, shuffle=True, seed=3)
        path = tmp_path / "second.parquet"
        second.write_parquet(path)
        out = subprocess.run(
            [sys.executable, "-c", RERUN, sb.url, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert out.returncode == 0, out.stderr
        assert "('accepted', 4)" in out.stdout and "('rejected', 1)" in out.stdout, out.stdout
        assert "('unchanged', 194)" in out.stdout, out.stdout
        book = sb.state(settled=True)["dotdigital"]["address_books"]["9"]
        twice = {e for e, n in book.items() if n == 2}
        assert twice == {"quinn.khan2@example.org", "nora.rossi3@mail.example.net"}
        assert book["new.one@example.com"] == book["new.two@example.com"] == 1
        assert "suppressed.user@example.com" not in book, "rejected last time: sent again, rejected again"
        third = second.crm.submit(t, skip_unchanged=True, progress=False)
        once_more = second.filter(pl.col("email").ne_missing("suppressed.user@example.com")).crm.submit(
            t, skip_unchanged=True, progress=False
        )
        after = sb.state(settled=True)["dotdigital"]["address_books"]["9"]
    # the third run sends only the row the vendor refused last time; without it, nothing at all
    assert third.counts() == {"unchanged": 198, "rejected": 1, "invalid": 2} and third.status().height == 1
    assert once_more.status().height == 0 and once_more.counts() == {"unchanged": 198, "invalid": 2}
    assert after == book, "the vendor received nothing more"
    rep = third.report().filter(pl.col("outcome") == "unchanged")
    assert (
        rep["partition"].null_count() == rep.height and "identical to what the vendor last accepted" in rep["detail"][0]
    )


def test_the_plan_says_how_many_rows_would_be_sent_and_how_many_are_unchanged():
    frame = _contacts()
    with sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(4)
        assert frame.crm.plan(t, skip_unchanged=True).unchanged_rows == 0
        frame.crm.submit(t, skip_unchanged=True, progress=False)
        plan = frame.crm.plan(t, skip_unchanged=True)
        lazy = frame.lazy().crm.plan(t, skip_unchanged=True)
    assert (plan.unchanged_rows, plan.rows_to_send, plan.requests) == (196, 1, 1)
    assert lazy.unchanged_rows == 196 and lazy.partitions.equals(plan.partitions)
    assert "unchanged rows 196 (identical to what the vendor last accepted: not sent)" in repr(plan)
    assert frame.crm.plan(t).unchanged_rows == 0, "off by default"


@pytest.mark.parametrize(
    "name",
    ["dotdigital.transactional_data", "dotdigital.insight_data", "qualtrics.transaction_contacts", "dengage.contacts"],
)
def test_every_target_skips_what_the_vendor_confirmed(name):
    frames: dict[str, Any] = {
        "dotdigital.transactional_data": (
            sample("orders.parquet"),
            lambda sb: sb.dotdigital().transactional_data("orders", key="order_id", contact="email"),
        ),
        "dotdigital.insight_data": (
            sample("orders.parquet"),
            lambda sb: sb.dotdigital().insight_data("orders", scope="contact", type="orders", key="order_id"),
        ),
        "qualtrics.transaction_contacts": (
            sample("survey_transactions.csv"),
            lambda sb: sb.qualtrics().transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id"]),
        ),
        "dengage.contacts": (
            sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String)),
            lambda sb: sb.dengage().contacts(),
        ),
    }
    frame, target = frames[name]
    known = [e.lower() for e in _contacts()["email"].drop_nulls()]
    with sandbox(**FAST, contacts=known) as sb:
        t = target(sb)
        once = frame.crm.submit(t, skip_unchanged=True, progress=False)
        before = sb.state(settled=True)
        again = frame.crm.submit(t, skip_unchanged=True, progress=False)
        after = sb.state(settled=True)
    assert again.counts()["unchanged"] == once.counts()["accepted"]
    assert again.status()["rows"].sum() == once.counts().get("rejected", 0), "only what was refused goes again"
    assert after == before, "the vendor wrote nothing the second time"


def test_qualtrics_transactions_are_known_by_the_whole_record_so_a_rerun_duplicates_none():
    frame = sample("survey_transactions.csv")
    with sandbox(**FAST) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"])
        frame.crm.submit(t, skip_unchanged=True, progress=False)
        more = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("ORD-NEW")).otherwise(pl.col("order_id")).alias("order_id")
        )  # one new transaction for a known contact
        job = more.crm.submit(t, skip_unchanged=True, progress=False)
        batches = sb.state(settled=True)["qualtrics"]["batches"]
    assert job.counts()["accepted"] == 1 and job.counts()["unchanged"] == 118
    assert sorted(sum(b.values()) for b in batches.values()) == [1, 119], "one transaction more, none twice"


def test_row_order_and_columns_that_are_not_sent_do_not_make_rows_look_changed(conns):
    frame = sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))
    cols = ["contact_key", "email", "name", "surname"]
    with sandbox(**FAST) as sb:
        t = sb.dengage().contacts(columns=cols)
        frame.crm.submit(t, skip_unchanged=True, progress=False)
        shuffled = frame.with_columns(pl.lit("x").alias("note")).reverse()  # an extra column, not sent
        assert shuffled.crm.plan(t, skip_unchanged=True).rows_to_send == 0
        edited = shuffled.with_columns(
            pl.when(pl.col("contact_key") == "CK100000").then(pl.lit("Zed")).otherwise(pl.col("name")).alias("name")
        )
        assert edited.crm.plan(t, skip_unchanged=True).rows_to_send == 1, "a changed value in a sent column"
        relabelled = sb.dengage().contacts(
            columns={"contact_key": "contact_key", "email": "email", "surname": "name", "name": "surname"}
        )
        assert frame.select(cols).crm.plan(relabelled, skip_unchanged=True).unchanged_rows == 0, (
            "the same cells under other column names are changed rows"
        )


def test_the_destination_survives_a_password_change_and_differs_per_book_collection_list_and_account():
    a = cf.Dotdigital("apiuser@example.com", "pw-1").contacts(1)
    assert _baseline.destination(a) == _baseline.destination(cf.Dotdigital("apiuser@example.com", "pw-2").contacts(1))
    assert "pw-1" not in _baseline.destination(a)
    others = [
        cf.Dotdigital("apiuser@example.com", "pw").contacts(2),
        cf.Dotdigital("other@example.com", "pw").contacts(1),
        cf.Dotdigital("apiuser@example.com", "pw", region="r2").contacts(1),
        cf.Dotdigital("u", "p").transactional_data("orders", key="k"),
        cf.Dotdigital("u", "p").transactional_data("orders2", key="k"),
        cf.Dotdigital("u", "p").insight_data("orders", scope="contact", type="orders", key="k"),
        cf.Qualtrics("t", datacenter="fra1").transaction_contacts("POOL_1", "CG_1"),
        cf.Qualtrics("t", datacenter="fra1").transaction_contacts("POOL_1", "CG_2"),
        cf.Dengage("k1", "p").contacts(),
        cf.Dengage("k2", "p").contacts(),
    ]
    ids = [_baseline.destination(x) for x in [a, *others]]
    assert len(set(ids)) == len(ids)
    assert _baseline.destination(
        cf.Qualtrics("t1", datacenter="fra1").transaction_contacts("POOL_1", "CG_1")
    ) == _baseline.destination(cf.Qualtrics("t2", datacenter="fra1").transaction_contacts("POOL_1", "CG_1"))
    assert _baseline.destination(cf.Dengage("k1", "p1").contacts()) == _baseline.destination(
        cf.Dengage("k1", "p2").contacts()
    )


def test_rejected_in_doubt_and_invalid_rows_never_enter_the_baseline():
    frame = sample("orders.parquet")
    with sandbox(**FAST) as sb:  # no known contacts: every order is rejected
        t = sb.dotdigital().transactional_data("orders", key="order_id", contact="email")
        job = frame.crm.submit(t, skip_unchanged=True, progress=False)
        assert "accepted" not in job.counts() and cf.baseline(t).height == 0
    with sandbox(**FAST, variants=["qualtrics_merged_duplicates", "qualtrics_no_import_report"]) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_dup", transaction_fields=["order_id"])
        doubt = pl.concat([sample("survey_transactions.csv").head(10)] * 2)
        with pytest.warns(cf.CrmWarning):
            job = doubt.crm.submit(t, skip_unchanged=True, progress=False)
        assert set(job.counts()) == {"in_doubt", "invalid"} and cf.baseline(t).height == 0


def test_a_half_written_or_foreign_baseline_file_is_never_trusted(tmp_path):
    frame = _contacts()
    with sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(6)
        frame.crm.submit(t, skip_unchanged=True, progress=False)
        folder = _baseline.folder(t)
        (folder / "delta-99999999999999999999-crash.tmp").write_bytes(b"PAR1 half a file")  # a crash mid-write
        assert frame.crm.plan(t, skip_unchanged=True).unchanged_rows == 196
        (base,) = folder.glob("base-*.parquet")
        data = pl.read_parquet(base)
        data.write_parquet(base, metadata={"crmframes": '{"polars": "0.0.1", "jobs": [["old", 0]]}'})
        assert frame.crm.plan(t, skip_unchanged=True).unchanged_rows == 0, "hashed by another polars: not compared"


def test_the_baseline_is_shown_and_reset_from_python_and_the_cli():
    frame = _contacts()
    with sandbox(**FAST) as sb:
        t = sb.dotdigital().contacts(12)
        job = frame.crm.submit(t, skip_unchanged=True, progress=False)
        known = cf.baseline(t)
        assert known.columns == ["key_hash", "row_hash", "job_id", "written_at"]
        assert known.height == 196 and set(known["job_id"]) == {job.id} and known["written_at"].null_count() == 0
        env = {
            **os.environ,
            "DOTDIGITAL_USERNAME": "sandbox-user@apiconnector.com",
            "DOTDIGITAL_PASSWORD": "x",
            "DOTDIGITAL_BASE_URL": sb.url,
        }
        out = subprocess.run(
            [sys.executable, "-m", "crmframes", "baseline", "--to", "dotdigital.contacts", "-o", "address_book_id=12"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0 and "196 keys" in out.stdout, out.stdout + out.stderr
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "crmframes",
                "baseline",
                "--to",
                "dotdigital.contacts",
                "-o",
                "address_book_id=12",
                "--reset",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0 and "forgot" in out.stdout
        assert cf.baseline(t).height == 0
        frame.crm.submit(t, skip_unchanged=True, progress=False)
        assert cf.baseline(t, reset=True).height == 0


def test_sigkill_during_a_skip_unchanged_run_keeps_only_what_was_confirmed(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job_id = run_child_until_frozen(sb.url, "contacts", "halfway", tmp_path, "skip")
        frame = frame_for("contacts")
        conn = connection_for("contacts", sb.url)
        t = conn.contacts(77).with_limits(max_bytes=4000, max_concurrent=1)
        confirmed = cf.Job.restore(job_id, connection=conn).report()
        accepted_before = confirmed.filter(pl.col("outcome") == "accepted").height
        assert 0 < accepted_before < 196, "killed halfway"
        # nothing the vendor did not confirm reads unchanged: only the first partition's rows
        assert frame.crm.plan(t, skip_unchanged=True).unchanged_rows == accepted_before
        time.sleep(0.4)
        job = cf.resume(job_id, frame, connection=conn)
        assert job.done and job.counts()["accepted"] == 196
        again = frame.crm.submit(t, skip_unchanged=True, progress=False)
        book = sb.state(settled=True)["dotdigital"]["address_books"]["77"]
    assert again.status().height == 1 and again.counts()["unchanged"] == 196  # only the rejected row went again
    assert set(book.values()) == {1} and len(book) == 196, "nothing lost, nothing written twice"


@given(
    keys=st.lists(st.integers(0, 2**64 - 1), max_size=3000, unique=True),
    queries=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=200),
    picks=st.lists(st.integers(0, 10**6), max_size=50),
)
@settings(max_examples=150, deadline=None)
def test_a_baseline_finds_each_key_where_a_binary_search_over_all_keys_does(keys, queries, picks):
    import numpy as np

    k = np.sort(np.array(keys, dtype=np.uint64))
    known = _baseline.Known(k, k, np.zeros(len(k), np.uint32), [("job", 0.0)])
    q = np.array(queries + [keys[p % len(keys)] for p in picks if keys], dtype=np.uint64)
    expected = np.minimum(np.searchsorted(k, q), max(len(k) - 1, 0)) if len(k) else np.zeros(len(q), np.int64)
    assert known.find(q).tolist() == expected.tolist()
