"""Pure parts of the engine: retry decisions, fault mapping, report states, flows on canned replies."""

from __future__ import annotations

import random
import time

import httpx
import polars as pl
import pytest

import crmframes as cf
from crmframes import _engine
from crmframes import _events as ev
from crmframes._flow import Call, Ended, Fault, Outcome, Pause, Progress, Reply, Totals
from crmframes._report import report, verdicts
from crmframes._retry import RetryPolicy, retry_after
from crmframes.vendors.dotdigital import contact_faults
from tests.conftest import sample, sandbox

P = RetryPolicy()
RNG = random.Random(0)


@pytest.mark.parametrize(
    ("kw", "retry", "why"),
    [
        ({"status": 429, "headers": {"retry-after": "7"}}, True, "rate_limited"),
        ({"status": 503}, True, "server_error"),
        ({"status": 500, "idempotent": True}, True, "server_error"),
        ({"status": 500, "idempotent": False}, False, "in_doubt"),
        ({"status": 400}, False, "refused"),
        ({"status": 404}, False, "refused"),
        ({"status": 400, "busy": True}, True, "busy"),
        ({"status": None, "transport": "connect", "idempotent": False}, True, "transport"),
        ({"status": None, "transport": "read", "idempotent": True}, True, "transport"),
        ({"status": None, "transport": "read", "idempotent": False}, False, "in_doubt"),
    ],
)
def test_retry_policy_decides_by_status_transport_and_idempotency(kw, retry, why):
    d = P.decide(1, rng=RNG, **kw)
    assert (d.retry, d.why) == (retry, why)


def test_429_waits_what_the_vendor_says_and_backoff_grows_with_jitter_up_to_a_cap():
    assert P.decide(1, status=429, headers={"retry-after": "7"}).wait == 7
    assert P.decide(1, status=429, headers={"x-ratelimit-reset": "12"}).wait == 12
    assert retry_after({"x-ratelimit-reset": "1700000030"}, now_epoch=1700000000) == 30  # an epoch [C]
    waits = [P.backoff_for(a, random.Random(1)) for a in range(1, 12)]
    assert waits[0] < waits[3] and max(waits) <= P.max_backoff * (1 + P.jitter)
    assert P.decide(P.attempts, status=503).why == "exhausted"
    assert RetryPolicy(backoff=0, jitter=0).decide(1, status=503).wait == 0


ROWS = pl.Series([10, 11, 12, 13], dtype=pl.Int64)
KEYS = pl.Series(["a", "b", "c", "d"])


def _verdict(
    faults: list[Fault],
    *,
    named: bool = False,
    imported: int | None = None,
    rejected: int | None = None,
    created: int | None = None,
    extra: tuple[Fault, ...] = (),
    keys: pl.Series | None = KEYS,
):
    found = verdicts(
        Outcome(
            "i",
            "finished",
            "Finished",
            tuple(faults),
            Totals(imported, rejected, created),
            named=named,
            extra=extra,
        ),
        (),
        ROWS,
        keys,
    )
    return {r: (o, why) for r, o, why, _ in found.rows.rows()}, found.unmatched, found.reconciled


def test_faults_map_by_position_and_by_key_and_the_rest_is_accepted_when_totals_reconcile():
    got, unmatched, ok = _verdict([Fault("x", index=1), Fault("y", "d", key="c")], imported=2, rejected=2)
    assert got == {11: ("rejected", "x"), 12: ("rejected", "y")} and unmatched == 0 and ok


@pytest.mark.parametrize(
    ("faults", "imported", "why"),
    [
        ([Fault("x", index=1)], 2, "the vendor imported 2 of the 3 rows it did not fault"),
        ([Fault("x", index=1)], None, "no totals to reconcile with"),
        ([Fault("x", index=1), Fault("z", key="nope")], 3, "a fault names a key never sent"),
        ([Fault("x", index=1), Fault("w", index=9)], 3, "a fault names a position never sent"),
        ([Fault("x", index=1), Fault("v")], 3, "a fault names no row at all"),
    ],
)
def test_rows_the_answer_does_not_cover_are_in_doubt_never_accepted(faults, imported, why):
    got, _, ok = _verdict(faults, imported=imported)
    assert not ok, why
    assert got[11] == ("rejected", "x")
    assert {r: o for r, (o, _) in got.items() if r != 11} == {10: "in_doubt", 12: "in_doubt", 13: "in_doubt"}, why


def test_a_per_row_report_decides_rows_the_totals_leave_open():
    extra = (Fault("imported", index=0, verdict="accepted"), Fault("BAD_EMAIL", index=2))
    got, _, ok = _verdict([Fault("x", index=1)], imported=1, extra=extra)
    assert got == {11: ("rejected", "x"), 12: ("rejected", "BAD_EMAIL"), 13: ("in_doubt", "not_reconciled")}
    assert not ok


def test_no_transaction_created_rejects_the_rows_whose_contact_was_imported():
    got, _, ok = _verdict([Fault("x", index=1)], imported=3, created=0)
    assert got[11] == ("rejected", "x") and ok
    assert {got[r] for r in (10, 12, 13)} == {("rejected", "transaction_not_created")}
    got, _, ok = _verdict([Fault("x", index=1)], imported=3, created=2)
    assert {got[r][0] for r in (10, 12, 13)} == {"in_doubt"} and not ok


def test_a_named_answer_accepts_only_the_rows_it_names():
    named = [Fault("inserted", key="a", verdict="accepted"), Fault("updated", key="b", verdict="accepted")]
    got, _, ok = _verdict([*named, Fault("error", "c: email is not valid")], named=True)
    assert got == {12: ("rejected", "error"), 13: ("in_doubt", "not_confirmed")} and not ok
    got, _, ok = _verdict([*named, Fault("error", "c: bad"), Fault("error", "d: bad")], named=True)
    assert got == {12: ("rejected", "error"), 13: ("rejected", "error")} and ok


def test_errors_tied_to_no_key_reject_the_unnamed_rows_only_when_the_counts_match():
    named = [Fault("inserted", key="a", verdict="accepted"), Fault("updated", key="b", verdict="accepted")]
    got, _, _ = _verdict([*named, Fault("error", "email is not valid"), Fault("error", "gsm too long")], named=True)
    assert {r: o for r, (o, _) in got.items()} == {12: "rejected", 13: "rejected"}
    got, _, ok = _verdict([*named, Fault("error", "email is not valid")], named=True)
    assert {r: o for r, (o, _) in got.items()} == {12: "in_doubt", 13: "in_doubt"} and not ok
    got, _, _ = _verdict([*named, Fault("error", "a and c are both bad")], named=True)
    assert got[12][0] == "in_doubt", "a text naming two keys ties to neither"


def test_an_answer_that_both_accepts_and_rejects_a_row_leaves_it_in_doubt():
    got, _, ok = _verdict([Fault("inserted", key="a", verdict="accepted"), Fault("error", key="a")], named=True)
    assert got[10] == ("in_doubt", "contradictory") and not ok


def test_contacts_faults_csv_with_bom_and_any_header_case_maps_by_email():
    raw = "\ufeffReason,EMAIL,firstname\r\nUnsubscribed,Karina@Example.com,K\r\n".encode()
    assert contact_faults(raw) == [Fault("Unsubscribed", key="karina@example.com")]


@pytest.mark.parametrize(
    "doc",
    [
        {
            "code": 0,
            "message": "Success",
            "data": {"inserted": ["a"], "updated": ["b"], "errors": ["c: email is not valid."], "warnings": []},
        },
        {"inserted": ["a"], "updated": ["b"], "errors": [{"contact_key": "c", "message": "email is not valid."}]},
        {
            "code": 0,
            "data": {
                "inserted": [{"contact_key": "a"}],
                "updated": [{"contactKey": "b"}],
                "errors": [{"key": "c", "error": "email is not valid."}],
            },
        },
    ],
    ids=["data layout, text errors", "top-level layout, object errors", "object elements"],
)
def test_dengage_answers_in_either_layout_name_the_rows_written_and_rejected(doc):
    import json

    t = cf.Dengage("u", "p").contacts()
    out = t.accepted(Reply(200, {}, json.dumps(doc).encode())).outcome
    assert out is not None and out.named
    found = verdicts(out, (), ROWS, KEYS)
    assert {r: o for r, o, *_ in found.rows.rows()} == {12: "rejected", 13: "in_doubt"}
    assert "email is not valid" in found.rows.filter(pl.col("row") == 12)["detail"].item()


def test_a_dengage_refusal_code_fails_the_whole_call_with_its_message():
    t = cf.Dengage("u", "p").contacts()
    out = t.accepted(Reply(200, {}, b'{"code": 11, "message": "ValidationFails"}')).outcome
    assert out is not None and (out.state, out.vendor_state, out.message) == ("failed", "code 11", "ValidationFails")


def _state(parts: dict[int, tuple[str, int]], input_rows: int, **extra: object) -> ev.JobState:
    st = ev.JobState("j")
    st.apply(ev.Planned("j", 0, "t", tuple((i, n, 100) for i, (_, n) in parts.items()), input_rows, 1))
    for i, (state, _) in parts.items():
        if state == ev.SUBMITTED:
            st.apply(ev.Submitted("j", 1, i, f"imp{i}", "NotFinished"))
        elif state != ev.PLANNED:
            st.apply(ev.Settled("j", 2, i, state, message="m", **extra))  # type: ignore[arg-type]
    return st


def test_report_gives_every_row_one_outcome_from_its_partitions_state():
    plan_parts = pl.DataFrame({"partition": [0, 1, 2, 3, 4], "first_row": [0, 3, 5, 7, 9], "last_row": [2, 4, 6, 8, 9]})
    problems = pl.DataFrame({"row": [4], "column": ["email"], "code": ["invalid_email"], "problem": ["bad"]})
    st = _state(
        {0: (ev.FINISHED, 3), 1: (ev.IN_DOUBT, 1), 2: (ev.SUBMITTED, 2), 3: (ev.NOT_SENT, 2), 4: (ev.PLANNED, 1)}, 10
    )
    rep = report(st, plan_parts, problems, running=True)
    assert rep["outcome"].cast(pl.String).to_list() == [
        "accepted",
        "accepted",
        "accepted",
        "in_doubt",
        "invalid",
        "pending",
        "pending",
        "not_sent",
        "not_sent",
        "queued",
    ]
    assert rep["reason"].to_list()[3:5] == ["answer_lost", "invalid_email"]
    assert rep["reason"][7] == "cancelled" and rep["reason"][9] == "queued"
    assert rep["import_id"][5] == "imp2" and rep["partition"][4] is None


def test_a_vendor_fault_turns_only_its_row_rejected():
    plan_parts = pl.DataFrame({"partition": [0], "first_row": [0], "last_row": [2]})
    faults = pl.DataFrame(
        {"row": [1], "reason": ["Duplicate"], "detail": [None]},
        schema={"row": pl.Int64, "reason": pl.String, "detail": pl.String},
    )
    st = _state({0: (ev.FINISHED, 3)}, 3, faults=faults)
    rep = report(st, plan_parts, pl.DataFrame(schema=cf._pipeline.PROBLEM_SCHEMA), running=False)
    assert rep["outcome"].cast(pl.String).to_list() == ["accepted", "rejected", "accepted"]
    assert rep["reason"][1] == "Duplicate"


def test_insight_flow_polls_on_a_growing_schedule_until_finished():
    dd = cf.Dotdigital("u", "p")
    t = dd.insight_data("orders", scope="contact", type="orders", key="k")
    flow = t.track("imp", (), None)
    pauses, states = [], iter(["NotStarted", "Processing", "Processing", "Finished"])
    reply = None
    while True:
        try:
            step = flow.send(reply)
        except StopIteration as stop:
            outcome = stop.value
            break
        reply = None
        if isinstance(step, Pause):
            pauses.append(step.seconds)
        elif isinstance(step, Call):
            assert step.request.path == "/insightData/v3/import/imp" and step.request.method == "GET"
            s = next(states)
            body = {"importId": "imp", "status": s}
            if s == "Finished":
                body["summary"] = {"totalRecords": 2, "totalImported": 2, "totalRejected": 0}
            reply = Reply(200, {}, cf._flow.json.dumps(body).encode())
        else:
            assert isinstance(step, (Progress, Ended))
    assert pauses == [5.0, 7.5, 11.25, 16.875]
    assert outcome.state == "finished" and outcome.totals.imported == 2


def test_a_qualtrics_batch_id_replaces_the_reserved_placeholder_and_never_grows_the_body():
    qx = cf.Qualtrics("t", datacenter="fra1")
    t = qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id", "amount"])
    (p,) = list(sample("survey_transactions.csv").crm.payloads(t))
    body = t.reframe(p.body, "BT_abc")
    assert b'"batchId":"BT_abc"' in body and len(body) < len(p.body)
    assert body.endswith(p.body[len(t.framing().prefix) :])


def test_qualtrics_submit_is_never_repeated_when_its_answer_is_lost():
    """With every answer dropped, a Qualtrics import is in_doubt, never re-sent: a re-send
    would duplicate the transactions the vendor already took."""
    frame = sample("survey_transactions.csv")
    with sandbox(job_duration=0.1, time_scale=0.001) as sb:
        made = httpx.post(
            sb.url + "/API/v3/directories/POOL_demo/transactionbatches",
            headers={"X-API-TOKEN": "t"},
            json={"transactionIds": [], "creationDate": "2026-11-30T10:00:00Z"},
        )
        bid = made.json()["result"]["id"]  # a batch made beforehand, as a user passing batch_id= has
        t = sb.qualtrics().transaction_contacts(
            "POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"], batch_id=bid
        )
        sb.config(p_drop=1.0)
        job = frame.crm.submit(t, check_account=False)
        sb.config(p_drop=0.0)
        time.sleep(0.3)  # let the sandbox finish the import it took
        batches = sb.state()["qualtrics"]["batches"]
    assert set(job.report()["outcome"].cast(pl.String)) == {"in_doubt", "invalid"}
    assert job.status()["state"].to_list() == ["in_doubt"]
    # the vendor applied it once: exactly why it must not be sent again
    assert sum(batches[bid].values()) == 119


def test_an_expired_dengage_token_is_renewed_once_and_the_call_succeeds():
    frame = sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))
    with sandbox(time_scale=0.001) as sb:
        dn = sb.dengage()
        first = frame.head(50).crm.submit(dn.contacts())
        token = _engine.engine().sessions[dn].token
        sb.sandbox.state.tokens.clear()  # the vendor forgets every token
        second = frame.tail(50).crm.submit(dn.contacts())
        renewed = _engine.engine().sessions[dn].token
    assert token and renewed and renewed != token
    assert first.counts()["accepted"] == 48 and second.counts()["accepted"] == 50
    assert second.status()["state"].to_list() == ["finished"] and second.status()["retries"].item() == 0
