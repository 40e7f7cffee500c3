"""Every documented status and answer variant, end to end over real HTTP against the sandbox.

The sandbox produces each word and each answer shape that the vendors' documents and real
integrations show (CONTRACTS §6), chosen by its ``status_mix`` and ``variants`` knobs; the
client must end every job, and tie every outcome to what the vendor said.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest

import crmframes as cf
from crmframes._flow import DONE, FAILED
from tests.conftest import sample, sandbox
from tests.test_engine_e2e import KNOWN

FAST = {"job_duration": 0.05, "time_scale": 0.001}


def _contacts() -> pl.DataFrame:
    return sample("contacts.csv")


def _orders() -> pl.DataFrame:
    return sample("orders.parquet")


def _survey() -> pl.DataFrame:
    return sample("survey_transactions.csv")


def _people() -> pl.DataFrame:
    return sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))


ENDPOINTS: dict[str, tuple[str, Callable[[], pl.DataFrame], Callable[..., cf.Target]]] = {
    "contacts": ("dotdigital.contacts", _contacts, lambda sb, **kw: sb.dotdigital().contacts(1001, **kw)),
    "transactional": (
        "dotdigital.transactional_data",
        _orders,
        lambda sb, **kw: sb.dotdigital().transactional_data("orders", key="order_id", contact="email", **kw),
    ),
    "insight": (
        "dotdigital.insight_data",
        _orders,
        lambda sb, **kw: sb.dotdigital().insight_data("orders", scope="contact", type="orders", key="order_id", **kw),
    ),
    "qualtrics": (
        "qualtrics.transaction_contacts",
        _survey,
        lambda sb, **kw: sb.qualtrics().transaction_contacts(
            "POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"], **kw
        ),
    ),
}


def _terminal_words() -> list[tuple[str, str, str]]:
    out = []
    for endpoint, (name, _, _) in ENDPOINTS.items():
        statuses = cf.targets()[name].statuses
        assert statuses is not None
        out += [(endpoint, s.word, s.means) for s in statuses if s.means in (DONE, FAILED)]
    return out


TERMINAL = _terminal_words()


def run(endpoint: str, knobs: dict[str, Any], **target: Any) -> tuple[cf.Job, dict[str, Any], pl.DataFrame]:
    _, frame_of, target_of = ENDPOINTS[endpoint]
    frame = frame_of()
    with sandbox(contacts=KNOWN, seed=3, **{**FAST, **knobs}) as sb:
        job = frame.crm.submit(target_of(sb, **target), progress=False)
        return job, sb.state(settled=True), frame


def test_the_matrix_covers_every_documented_terminal_word():
    words = {(e, w) for e, w, _ in TERMINAL}
    assert ("contacts", "RejectedByWatchdog") in words and ("contacts", "ExceedsAllowedContactLimit") in words
    assert ("insight", "NotAvailableInThisVersion") in words and ("insight", "Completed") in words
    assert len([w for e, w, _ in TERMINAL if e == "contacts"]) == 7  # every word but NotFinished ends it


@pytest.mark.parametrize(("endpoint", "word", "means"), TERMINAL, ids=[f"{e}-{w}" for e, w, _ in TERMINAL])
def test_every_documented_terminal_status_ends_the_job_with_the_right_outcomes(endpoint, word, means):
    job, _, frame = run(endpoint, {"status_mix": {endpoint: {word: 1}}})
    assert job.done, f"{endpoint} ending {word} must end the job"
    rep = job.report()
    sent = rep.filter(pl.col("outcome") != "invalid")
    assert rep.height == frame.height and sent.height > 0
    if means == FAILED:
        assert set(sent["outcome"]) == {"rejected"} and set(sent["reason"]) == {word}
        assert set(job.status()["state"]) == {"failed"}
    else:
        assert set(job.status()["state"]) == {"finished"} and job.status()["reconciled"].all()
        assert "accepted" in set(sent["outcome"]) and "in_doubt" not in set(sent["outcome"])


@pytest.mark.parametrize(
    ("endpoint", "word"),
    [
        ("contacts", "Paused"),
        ("contacts", "NotFinished"),
        ("transactional", "Queued"),
        ("insight", "Processing"),
        ("qualtrics", "waiting"),
    ],
)
def test_an_import_that_never_ends_is_pending_at_the_deadline_and_the_job_stays_resumable(endpoint, word):
    job, _, _ = run(endpoint, {"status_mix": {endpoint: {word: 1}}}, poll_deadline=300)
    assert not job.done and job.state.stopped == "pending"
    sent = job.report().filter(pl.col("outcome") != "invalid")
    assert set(sent["outcome"]) == {"pending"}
    assert word in sent["detail"][0] and "poll_deadline" in sent["detail"][0]
    assert cf.jobs().filter(pl.col("job_id") == job.id)["state"].item() == "pending"


# --- answer variants: the same rows end the same way whatever the shape --------------------

VARIANT_CASES = [
    ("contacts", "dotdigital_pascal_case"),
    ("transactional", "dotdigital_pascal_case"),
    ("contacts", "dotdigital_faults_upper_header"),
    ("qualtrics", "qualtrics_percent_string"),
    ("qualtrics", "qualtrics_percent_only"),
]


def _outcomes(job: cf.Job) -> dict[int, tuple[str, str | None]]:
    rep = job.report().with_columns(pl.col("outcome").cast(pl.String))
    return {
        r: (o, None if why is None else why.casefold()) for r, o, why in rep.select("row", "outcome", "reason").rows()
    }


@pytest.mark.parametrize(("endpoint", "variant"), VARIANT_CASES, ids=[f"{e}-{v}" for e, v in VARIANT_CASES])
def test_each_answer_variant_maps_faults_to_the_same_rows(endpoint, variant):
    clean, clean_state, _ = run(endpoint, {})
    job, state, _ = run(endpoint, {"variants": [variant]})
    assert job.done and job.status()["reconciled"].all()
    assert _outcomes(job) == _outcomes(clean)
    assert _stored(state) == _stored(clean_state)


def _stored(state: dict[str, Any]) -> dict[str, Any]:
    """The sandbox state with Qualtrics batch ids (random per run) replaced by their contents."""
    batches = state["qualtrics"]["batches"]
    return {**state, "qualtrics": {**state["qualtrics"], "batches": sorted(map(json.dumps, batches.values()))}}


def test_qualtrics_merged_duplicates_are_confirmed_row_by_row_by_the_import_report():
    frame = pl.concat([_survey().head(30), _survey().head(5)])  # five emails twice: Qualtrics merges them
    with sandbox(**FAST, variants=["qualtrics_merged_duplicates"]) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_dup", transaction_fields=["order_id", "amount"])
        with pytest.warns(cf.CrmWarning, match="per-row answers still tie every row"):
            job = frame.crm.submit(t, progress=False)
    assert job.counts() == {"accepted": 34, "invalid": 1}, "the counts cover 30 contacts, the report all 35 rows"
    assert job.status()["reconciled"].to_list() == [False]


def test_without_the_import_report_rows_the_counts_do_not_cover_are_in_doubt():
    frame = pl.concat([_survey().head(30), _survey().head(5)])
    with sandbox(**FAST, variants=["qualtrics_merged_duplicates", "qualtrics_no_import_report"]) as sb:
        t = sb.qualtrics().transaction_contacts("POOL_demo", "CG_dup", transaction_fields=["order_id", "amount"])
        with pytest.warns(cf.CrmWarning, match="34 row.s. it does not confirm are in_doubt"):
            job = frame.crm.submit(t, progress=False)
    assert job.counts() == {"in_doubt": 34, "invalid": 1}
    assert "accepted" not in job.counts(), "a count that covers fewer rows than sent confirms none of them"


def test_a_missing_qualtrics_batch_creates_no_transaction_and_its_rows_are_rejected():
    with sandbox(**FAST) as sb:
        t = sb.qualtrics().transaction_contacts(
            "POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"], batch_id="BT_does_not_exist"
        )
        with pytest.raises(cf.AccountError, match="no transaction batch BT_does_not_exist"):
            _survey().crm.submit(t, progress=False)  # the preflight asks first
        job = _survey().crm.submit(t, progress=False, check_account=False)
        state = sb.state(settled=True)
    assert state["qualtrics"]["batches"] == {}
    assert job.counts() == {"rejected": 119, "invalid": 1}
    assert set(job.report().filter(pl.col("outcome") == "rejected")["reason"]) == {"transaction_not_created"}


DENGAGE_VARIANTS = ["dengage_top_level", "dengage_error_objects"]


@pytest.mark.parametrize("variant", DENGAGE_VARIANTS)
def test_dengage_layouts_and_error_shapes_name_the_same_rows(variant):
    frame = _people().with_columns(  # two addresses D·engage refuses, only the sandbox knows why
        pl.when(pl.int_range(pl.len()).is_in([5, 6])).then(pl.lit("x" * 21)).otherwise(None).alias("gsm")
    )
    frame = frame.with_columns(pl.col("gsm").cast(pl.String))

    def go(variants: list[str]) -> cf.Job:
        with sandbox(**FAST, variants=variants) as sb:
            t = sb.dengage().contacts()
            # the client checks gsm <= 20 itself; send it anyway to see the vendor's own refusal
            return frame.crm.submit(_unchecked(t, "gsm"), progress=False)

    clean, job = go([]), go([variant])
    assert _outcomes(job) == _outcomes(clean)
    assert {o for o, _ in _outcomes(job).values()} == {"accepted", "rejected", "invalid"}
    assert job.status()["reconciled"].all()


def test_dengage_errors_that_name_no_contact_reject_only_the_rows_not_written():
    frame = _people().with_columns(
        pl.when(pl.int_range(pl.len()).is_in([5, 6]))
        .then(pl.lit("x" * 21))
        .otherwise(None)
        .cast(pl.String)
        .alias("gsm")
    )
    with (
        sandbox(**FAST, variants=["dengage_error_text"]) as sb,
        pytest.warns(cf.CrmWarning, match="per-row answers still tie every row"),
    ):
        job = frame.crm.submit(_unchecked(sb.dengage().contacts(), "gsm"), progress=False)
    rejected = job.report().filter(pl.col("outcome") == "rejected")
    assert rejected["row"].to_list() == [5, 6] and "gsm is longer" in rejected["detail"][0]


def _unchecked(t: cf.Target, column: str) -> cf.Target:
    """The target with its own check of ``column`` switched off, so the vendor's answer is tested."""
    real = t.bind

    def bind(schema: pl.Schema) -> Any:
        b = real(schema)
        import dataclasses

        return dataclasses.replace(b, checks=tuple(c for c in b.checks if c.column != column))

    object.__setattr__(t, "bind", bind)
    return t


# --- bodies that keep to the seeds --------------------------------------------------------


def test_qualtrics_sends_only_documented_contact_keys_and_says_where_phone_goes(conns):
    _, qx, _ = conns
    frame = _survey().with_columns(pl.lit("+441234567890").alias("phone"))
    t = qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id"])
    body = json.loads(next(iter(frame.crm.payloads(t))).body)
    allowed = {
        "firstName",
        "lastName",
        "email",
        "extRef",
        "embeddedData",
        "language",
        "unsubscribed",
        "transactionData",
    }
    assert all(set(c) <= allowed for c in body["contacts"])
    assert body["contacts"][0]["embeddedData"]["phone"] == "+441234567890"
    assert any("'phone' go in embeddedData" in n for n in frame.crm.plan(t).notes)
    assert "'phone' go in embeddedData" in repr(frame.crm.plan(t))


def test_qualtrics_rows_with_every_transaction_field_null_are_invalid_never_sent_empty(conns):
    _, qx, _ = conns
    frame = (
        _survey()
        .head(4)
        .with_columns(
            pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("order_id", "amount")
        )
    )
    t = qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id", "amount"])
    problems = frame.crm.validate(t)
    assert problems.select("row", "code").rows() == [(2, "no_transaction_data")]
    body = json.loads(next(iter(frame.crm.payloads(t))).body)
    assert len(body["contacts"]) == 3 and all(c["transactionData"] for c in body["contacts"])


def test_dengage_dates_are_ten_characters_and_datetimes_keep_milliseconds(conns):
    import datetime as dt

    _, _, dn = conns
    frame = pl.DataFrame(
        {
            "contact_key": ["a", "b"],
            "birth_date": [dt.datetime(1984, 9, 11), dt.datetime(1990, 1, 2, 13, 30)],
            "subscription_date": [dt.datetime(2026, 1, 2, 3, 4, 5, 678_900), dt.datetime(2026, 1, 2)],
        }
    )
    t = dn.contacts()
    assert frame.crm.validate(t).select("row", "code").rows() == [(1, "not_a_date")]
    (record,) = json.loads(next(iter(frame.crm.payloads(t))).body)["contactDatas"]
    assert record == {"contact_key": "a", "birth_date": "1984-09-11", "subscription_date": "2026-01-02 03:04:05.678"}
    dates = pl.DataFrame({"contact_key": ["c"], "birth_date": [dt.date(1984, 9, 11)]})
    (record,) = json.loads(next(iter(dates.crm.payloads(t))).body)["contactDatas"]
    assert record["birth_date"] == "1984-09-11"


def test_dengage_checks_the_documented_lengths(conns):
    _, _, dn = conns
    frame = pl.DataFrame(
        {
            "contact_key": ["a", "b", "c", "d"],
            "gsm": ["1" * 20, "1" * 21, None, None],
            "name": ["n", None, "x" * 101, None],
            "gender": [None, None, None, "g" * 101],
        }
    )
    got = frame.crm.validate(dn.contacts()).select("row", "column", "code").rows()
    assert got == [(1, "gsm", "too_long"), (2, "name", "too_long"), (3, "gender", "too_long")]


def test_dengage_sends_only_import_enabled_columns(conns):
    _, _, dn = conns
    frame = pl.DataFrame({"contact_key": ["a"], "email": ["a@example.com"], "shoe_size": [42]})
    with pytest.raises(cf.FrameError, match=r"'shoe_size' is not a column of D·engage's standard import template"):
        frame.crm.plan(dn.contacts())
    t = dn.contacts(columns=["contact_key", "email", "shoe_size"])  # the account's import-enabled set
    body = json.loads(next(iter(frame.crm.payloads(t))).body)
    assert body["columns"] == ["contact_key", "email", "shoe_size"]
    assert frame.drop("shoe_size").crm.plan(dn.contacts()).requests == 1


def test_dengage_refuses_new_contact_key_with_insert_if_not_exists(conns):
    _, _, dn = conns
    frame = pl.DataFrame({"contact_key": ["a"], "new_contact_key": ["b"]})
    with pytest.raises(cf.FrameError, match=r"new_contact_key .* cannot be combined with insertIfNotExists"):
        frame.crm.plan(dn.contacts(insert_if_not_exists=True, columns=["contact_key", "new_contact_key"]))
    body = json.loads(
        next(
            iter(
                frame.crm.payloads(dn.contacts(insert_if_not_exists=False, columns=["contact_key", "new_contact_key"]))
            )
        ).body
    )
    assert body["insertIfNotExists"] is False and body["throwExceptionIfInvalidRecord"] is False


def test_every_client_body_passes_the_sandboxs_checks_of_the_seeds_rules():
    """The sandbox puts a Qualtrics contact with an undocumented key or empty transactionData in
    unprocessed, and fails a D·engage record over a documented length: none of ours."""
    frame = _survey().with_columns(pl.lit("+44 1234").alias("phone"))
    with sandbox(**FAST) as sb:
        job = frame.crm.submit(
            sb.qualtrics().transaction_contacts("POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"]),
            progress=False,
        )
    assert job.counts() == {"accepted": 119, "invalid": 1}
