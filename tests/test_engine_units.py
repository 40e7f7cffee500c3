"""Pure parts of the engine: retry decisions, fault mapping, report states, flows on canned replies."""

from __future__ import annotations

import random
import time

import polars as pl
import pytest

import crmframes as cf
from crmframes import _engine
from crmframes import _events as ev
from crmframes._flow import Call, Fault, Note, Pause, Reply
from crmframes._report import map_faults, report
from crmframes._retry import RetryPolicy, retry_after
from crmframes.vendors.dengage import error_key
from crmframes.vendors.dotdigital import contact_faults
from tests.conftest import sample

P = RetryPolicy()
RNG = random.Random(0)


@pytest.mark.parametrize(("kw", "retry", "why"), [
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
])
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


def test_faults_map_by_position_and_by_key_and_count_what_names_no_row():
    rows = pl.Series([10, 11, 12, 13], dtype=pl.Int64)
    keys = pl.Series(["a", "b", "c", "c"])
    faults = [Fault("x", index=1), Fault("y", "d", key="c"), Fault("z", key="nope"), Fault("w", index=9), Fault("v")]
    frame, unmatched = map_faults(faults, rows, keys)
    assert frame.sort("row").rows() == [(11, "x", None), (12, "y", "d"), (13, "y", "d")]
    assert unmatched == 3


def test_contacts_faults_csv_with_bom_and_any_header_case_maps_by_email():
    raw = "\ufeffReason,EMAIL,firstname\r\nUnsubscribed,Karina@Example.com,K\r\n".encode()
    assert contact_faults(raw) == [Fault("Unsubscribed", key="karina@example.com")]


def test_dengage_error_entries_name_their_contact_key():
    assert error_key("c4: email is not valid.") == "c4"
    assert error_key("something went wrong") is None


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
    st = _state({0: (ev.FINISHED, 3), 1: (ev.IN_DOUBT, 1), 2: (ev.SUBMITTED, 2), 3: (ev.NOT_SENT, 2),
                 4: (ev.PLANNED, 1)}, 10)
    rep = report(st, plan_parts, problems, running=True)
    assert rep["outcome"].cast(pl.String).to_list() == [
        "accepted", "accepted", "accepted", "in_doubt", "invalid", "pending", "pending", "not_sent", "not_sent",
        "not_sent"]
    assert rep["reason"].to_list()[3:5] == ["answer_lost", "invalid_email"]
    assert rep["reason"][7] == "cancelled" and rep["reason"][9] == "waiting"
    assert rep["import_id"][5] == "imp2" and rep["partition"][4] is None


def test_a_vendor_fault_turns_only_its_row_rejected():
    plan_parts = pl.DataFrame({"partition": [0], "first_row": [0], "last_row": [2]})
    faults = pl.DataFrame({"row": [1], "reason": ["Duplicate"], "detail": [None]},
                          schema={"row": pl.Int64, "reason": pl.String, "detail": pl.String})
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
            assert isinstance(step, Note)
    assert pauses == [5.0, 7.5, 11.25, 16.875]
    assert outcome.state == "finished" and outcome.totals.imported == 2


def test_a_qualtrics_batch_id_replaces_the_reserved_placeholder_and_never_grows_the_body():
    qx = cf.Qualtrics("t", datacenter="fra1")
    t = qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id", "amount"])
    (p,) = list(sample("survey_transactions.csv").crm.payloads(t))
    body = t.reframe(p.body, "BT_abc")
    assert b'"batchId":"BT_abc"' in body and len(body) < len(p.body)
    assert body.endswith(p.body[len(t.framing().prefix):])


def test_qualtrics_submit_is_never_repeated_when_its_answer_is_lost():
    """With every answer dropped, a Qualtrics import is in_doubt, never re-sent: a re-send
    would duplicate the transactions the vendor already took."""
    frame = sample("survey_transactions.csv")
    with cf.sandbox(job_duration=0.1, time_scale=0.001) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"],
                                                batch_id="BT_fixed")
        sb.config(p_drop=1.0)
        job = frame.crm.submit(t)
        sb.config(p_drop=0.0)
        time.sleep(0.3)  # let the sandbox finish the import it took
        batches = sb.state()["qualtrics"]["batches"]
    assert set(job.report()["outcome"].cast(pl.String)) == {"in_doubt", "invalid"}
    assert job.status()["state"].to_list() == ["in_doubt"]
    # the vendor applied it once: exactly why it must not be sent again
    assert sum(batches["BT_fixed"].values()) == 119


def test_an_expired_dengage_token_is_renewed_once_and_the_call_succeeds():
    frame = sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))
    with cf.sandbox(time_scale=0.001) as sb:
        dn = sb.dengage()
        first = frame.head(50).crm.submit(dn.contacts())
        token = _engine.engine().sessions[dn].token
        sb.sandbox.state.tokens.clear()  # the vendor forgets every token
        second = frame.tail(50).crm.submit(dn.contacts())
        renewed = _engine.engine().sessions[dn].token
    assert token and renewed and renewed != token
    assert first.counts()["accepted"] == 48 and second.counts()["accepted"] == 50
    assert second.status()["state"].to_list() == ["finished"] and second.status()["retries"].item() == 0
