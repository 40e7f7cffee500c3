"""Bad options raise errors that say what is allowed; bad rows become problem rows."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crmframes as cf
from tests.conftest import sample


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda dd, qx, dn: dd.contacts(1, "OverwriteAll"), "merge_option must be one of 'Overwrite'"),
        (lambda dd, qx, dn: dd.contacts(1, 3), "0 = overwrite all fields"),
        (lambda dd, qx, dn: dd.contacts(0), "address_book_id must be a positive 32-bit integer"),
        (lambda dd, qx, dn: dd.contacts("12"), "address_book_id must be a positive 32-bit integer"),
        (lambda dd, qx, dn: dd.contacts(1, upload="xml"), "upload must be one of 'multipart', 'json'"),
        (lambda dd, qx, dn: dd.transactional_data("1orders", key="k"), "not starting with a digit"),
        (lambda dd, qx, dn: dd.transactional_data("my orders", key="k"), "letters, digits and '_' only"),
        (lambda dd, qx, dn: dd.transactional_data("orders", key="k", scope="global"), "scope must be one of"),
        (lambda dd, qx, dn: dd.insight_data("o", scope="contact", type="orders", key="k"), "2–255 characters"),
        (lambda dd, qx, dn: dd.insight_data("orders", scope="contact", type="order", key="k"), "Did you mean 'orders'"),
        (
            lambda dd, qx, dn: dd.insight_data("orders", scope="account", type="orders", key="k", contact="e"),
            "belong to no contact",
        ),
        (lambda dd, qx, dn: qx.transaction_contacts("DIR_1", "CG_1"), "starting with 'POOL_'"),
        (lambda dd, qx, dn: qx.transaction_contacts("POOL_1", "ML_1"), "starting with 'CG_'"),
        (
            lambda dd, qx, dn: qx.transaction_contacts(
                "POOL_1", "CG_1", transaction_fields=["a"], embedded_fields=["a"]
            ),
            "embeddedData keys must not overlap transaction_fields",
        ),
        (
            lambda dd, qx, dn: qx.transaction_contacts("POOL_1", "CG_1", transaction_fields="a"),
            "transaction_fields must be a list of column names",
        ),
        (lambda dd, qx, dn: dn.contacts(insert_if_not_exists="yes"), "must be True or False"),
        (lambda dd, qx, dn: cf.Dotdigital(region="r9"), "region must be one of 'r1', 'r2', 'r3'"),
        (lambda dd, qx, dn: cf.Dengage(region="mars"), "region must be one of"),
        (lambda dd, qx, dn: cf.Qualtrics("t"), "Qualtrics needs datacenter="),
        (
            lambda dd, qx, dn: dd.contacts(1).with_limits(max_bytes=60_000_000),
            "from 1 to 50,000,000 (the vendor's limit)",
        ),
    ],
)
def test_bad_options_raise_a_config_error_that_says_what_is_allowed(conns, build, expected):
    with pytest.raises(cf.ConfigError, match=re.escape(expected)):
        build(*conns)


def test_insight_type_and_merge_option_are_normalised_to_the_vendor_spelling(conns):
    dd = conns[0]
    assert dd.insight_data("orders", scope="contact", type="CONSENTINSIGHT", key="k").type == "consentInsight"
    assert dd.contacts(1, "onlyoverwriteifnotempty").merge_option == "OnlyOverwriteIfNotEmpty"
    assert dd.contacts(1, 2).merge_option == "OnlyOverwriteIfContactDataNotPopulated"


def test_missing_column_names_the_column_suggests_the_closest_and_lists_the_rest(conns):
    dd = conns[0]
    df = pl.DataFrame({"order_no": ["1"], "email": ["a@example.com"]})
    t = dd.transactional_data("orders", key="order_id")
    problems = df.crm.validate(t)
    assert problems.filter(pl.col("code") == "missing_column").height == 1
    with pytest.raises(cf.ColumnNotFoundError) as err:
        df.crm.plan(t)
    text = str(err.value)
    assert "'order_id' is not in the frame" in text and "Did you mean 'order_no'?" in text
    assert "pass key=<column>" in text and "'email'" in text
    assert isinstance(err.value, KeyError) and isinstance(err.value, cf.CrmError)


def test_dengage_without_contact_key_points_at_the_lookalike_column(conns):
    df = pl.DataFrame({"ContactKey": ["1"], "email": ["a@example.com"]})
    with pytest.raises(cf.ColumnNotFoundError, match="'ContactKey' looks like it"):
        list(df.crm.payloads(conns[2].contacts()))


def test_unsupported_and_nested_types_are_refused_with_a_fix(conns):
    dd = conns[0]
    df = pl.DataFrame({"email": ["a@example.com"], "tags": [["x"]], "raw": [b"\x00"], "wait": [dt.timedelta(1)]})
    with pytest.raises(cf.FrameError) as err:
        df.crm.plan(dd.contacts(1))
    text = str(err.value)
    assert "'tags' is nested" in text and "Flatten it" in text
    assert "'raw' has type Binary" in text and "'wait' has type Duration" in text


def test_nested_arrays_are_refused_for_dotdigital_json(conns):
    df = pl.DataFrame({"k": ["1"], "email": ["a@example.com"], "grid": [[[1, 2]]]})
    with pytest.raises(cf.FrameError, match="JsonContainsNestedArray"):
        df.crm.plan(conns[0].transactional_data("c", key="k"))


def test_row_problems_cover_nulls_emails_nan_duplicates_length_and_size(conns):
    dd = conns[0]
    df = pl.DataFrame(
        {
            "order_id": ["a", "b", None, "a", "c" * 300, "d", "e", "f"],
            "email": [
                "x@example.com",
                "bad@",
                "y@example.com",
                "z@example.com",
                "w@example.com",
                "v@example.com",
                None,
                "u@example.com",
            ],
            "total": [1.0, 2.0, 3.0, float("nan"), 5.0, float("inf"), 7.0, 8.0],
            "blob": ["x", "x", "x", "x", "x", "x", "x", "y" * 3000],
        }
    )
    t = dd.transactional_data("orders", key="order_id").with_limits(max_bytes=2000)
    problems = df.crm.validate(t)
    got = set(problems.select("row", "column", "code").iter_rows())
    assert got == {
        (1, "email", "invalid_email"),
        (2, "order_id", "missing_value"),
        (3, "total", "not_finite"),
        (3, "order_id", "duplicate_key"),
        (4, "order_id", "too_long"),
        (5, "total", "not_finite"),
        (6, "email", "missing_value"),
        (7, None, "row_too_large"),
    }
    assert (
        "row 0, the first valid row with the same value"
        in problems.filter(pl.col("code") == "duplicate_key")["problem"][0]
    )
    assert "2,000 bytes per request" in problems.filter(pl.col("code") == "row_too_large")["problem"][0]
    plan = df.crm.plan(t)
    assert plan.invalid_rows == 7 and plan.valid_rows == 1
    (p,) = list(df.crm.payloads(t))
    assert p.rows.to_list() == [0]


def test_sample_files_show_their_deliberate_bad_rows(conns):
    dd, qx, dn = conns
    assert set(sample("contacts.csv").crm.validate(dd.contacts(1))["code"]) == {
        "invalid_email",
        "missing_value",
        "duplicate_key",
    }
    dn_problems = sample("dengage_contacts.csv").crm.validate(dn.contacts())
    assert set(dn_problems["code"]) == {"missing_value", "invalid_value"}
    qx_t = qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id", "amount"])
    assert sample("survey_transactions.csv").crm.validate(qx_t)["row"].to_list() == [7]


def test_empty_frame_plans_zero_requests_and_yields_no_payloads(conns):
    df = pl.DataFrame(schema={"email": pl.String, "name": pl.String})
    t = conns[0].contacts(1)
    assert df.crm.validate(t).height == 0
    plan = df.crm.plan(t)
    assert plan.requests == 0 and plan.input_rows == 0 and plan.estimated_seconds == 0
    assert list(df.crm.payloads(t)) == []


def test_qualtrics_null_values_are_omitted_never_sent_as_null(conns):
    qx = conns[1]
    df = pl.DataFrame(
        {"email": ["a@example.com"], "firstName": [None], "store": [None], "order_id": ["o1"], "amount": [None]},
        schema_overrides={"firstName": pl.String, "store": pl.String, "amount": pl.Float64},
    )
    (p,) = list(df.crm.payloads(qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["order_id", "amount"])))
    assert b"null" not in p.body
    assert b'"contacts":[{"email":"a@example.com","embeddedData":{},"transactionData":{"order_id":"o1"}}]' in p.body


@pytest.mark.parametrize("target", ["insight", "transactional"])
def test_null_members_are_stripped_whatever_the_key_names(conns, target):
    """Keys with regex metacharacters, quotes and a null first member (an object opener)."""
    import json

    dd = conns[0]
    names = ["a.b", "x|y", '"q"', "$1", "(g)", "{"]
    rows = [[None, "v", None, "1", None, None], ["k", None, None, None, "2", "."], [None] * 6]
    data = pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row")
    nested = pl.Series("s", [{"a.b": None, "n": 1}, None, {"a.b": "z", "n": None}])
    df = data.with_columns(nested, key=pl.Series(["r0", "r1", "r2"]), email=pl.lit("a@example.com"))
    t = (
        dd.insight_data("orders", scope="contact", type="orders", key="key")
        if target == "insight"
        else dd.transactional_data("orders", key="key", contact="email")
    )
    (p,) = list(df.crm.payloads(t))
    records = json.loads(p.body)
    records = records["records"] if target == "insight" else records
    got = [r["json"] if target == "insight" else json.loads(r["json"]) for r in records]
    want = [{k: v for k, v in r.items() if v is not None} for r in df.drop("key", "email").to_dicts()]
    want = [
        {k: ({f: x for f, x in v.items() if x is not None} if isinstance(v, dict) else v) for k, v in r.items()}
        for r in want
    ]
    assert got == want
    assert b"null" not in p.body


def test_qualtrics_contact_without_any_identifier_is_a_problem_row(conns):
    df = pl.DataFrame(
        {"email": [None, "a@example.com"], "extRef": [None, None]}, schema={"email": pl.String, "extRef": pl.String}
    )
    problems = df.crm.validate(conns[1].transaction_contacts("POOL_1", "CG_1"))
    assert problems.select("row", "code").rows() == [(0, "no_identifier")]


def test_validate_reports_row_problems_even_when_a_column_is_missing(conns):
    df = pl.DataFrame({"email": ["bad", "a@example.com"]})
    problems = df.crm.validate(conns[0].transactional_data("orders", key="order_id"))
    assert set(problems.select("row", "code").iter_rows()) == {(None, "missing_column"), (0, "invalid_email")}


def test_accessor_rejects_something_that_is_not_a_target():
    with pytest.raises(TypeError, match="expected a crmframes target"):
        pl.DataFrame({"a": [1]}).crm.plan("dotdigital.contacts")  # type: ignore[arg-type]


@pytest.mark.parametrize("bucket_keys", [1_000_000, 7])  # one pass, and many passes over hash slices
@pytest.mark.parametrize("lazy", [False, True])
def test_duplicate_keys_are_flagged_after_their_first_row_whatever_the_pass_count(
    conns, monkeypatch, bucket_keys, lazy
):
    from crmframes import _duplicates

    monkeypatch.setattr(_duplicates, "DUP_BUCKET_KEYS", bucket_keys)
    dd = conns[0]
    keys = [f"k{i % 40}" for i in range(100)] + [None, None] + [f"u{i}" for i in range(30)]
    df = pl.DataFrame({"order_id": keys, "email": [f"e{i}@example.com" for i in range(len(keys))]})
    problems = (df.lazy() if lazy else df).crm.validate(
        dd.insight_data("orders", scope="contact", type="orders", key="order_id", contact="email")
    )
    dup = problems.filter(pl.col("code") == "duplicate_key")
    assert dup["row"].to_list() == list(range(40, 100))  # every repeat, never the first occurrence
    assert all(f"row {r % 40}, the first valid row" in text for r, text in zip(dup["row"], dup["problem"], strict=True))
    assert set(problems.filter(pl.col("row").is_in([100, 101]))["code"]) == {"missing_value"}


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a.b@c.co", True),
        ("a+tag@sub.c.co", True),
        ("é@ü.de", True),
        (".a@c.co", False),
        ("a.@c.co", False),
        ("a..b@c.co", False),
        ("a@c..co", False),
        ("a@.c.co", False),
        ("a@c.co.", False),
        ("a@c", False),
        ("a b@c.co", False),
        ("a@b@c.co", False),
        ('"a"@c.co', False),
    ],
)
def test_email_check_examples(email, ok):
    from crmframes._checks import email as email_check

    bad = pl.DataFrame({"e": [email]}).select(email_check("e").invalid).item()
    assert bad is (not ok)


def _email_ok(s: str) -> bool:
    """The rule as prose says it: one @, no spaces or specials, no empty dot-separated part."""
    specials = set('@"(),:;<>[]\\')
    local, at, domain = s.partition("@")
    parts = local.split(".") + domain.split(".")
    return (
        bool(at)
        and "." in domain
        and all(parts)
        and len(s.encode()) <= 254
        and not any(c.isspace() or c in specials for p in parts for c in p)
    )


_part = st.text(alphabet='ab. ,"\r\n\t\u00a0é', min_size=1, max_size=5)
_addresses = st.one_of(
    st.text(alphabet='ab.@ \t"é', max_size=12),  # mostly malformed
    st.builds("{}@{}.{}".format, _part, _part, _part),
)  # shaped like an address


@settings(max_examples=300, deadline=None)
@given(st.lists(_addresses, min_size=1, max_size=50))
def test_email_check_matches_the_rule(values):
    from crmframes._checks import email as email_check

    bad = pl.DataFrame({"e": values}, schema={"e": pl.String}).select(email_check("e").invalid).to_series().to_list()
    assert bad == [not _email_ok(v) for v in values]


def test_bodies_are_the_same_whether_encoded_rows_are_shared_or_copied(conns, monkeypatch):
    """Bodies are cut from views of polars' buffers, or from one copy when the rows are too
    fragmented; invalid rows, short rows (stored inside their view) and nulls included.
    payloads writes each body as its rows arrive; survey hashes the same bytes in place."""
    from crmframes import _buffers, _pipeline

    dd, qx, dn = conns
    n = 3000
    df = pl.DataFrame(
        {
            "key": [f"k{i}" for i in range(n)],
            "email": [("bad" if i % 7 == 3 else f"u{i}@x.io") for i in range(n)],
            "note": [None if i % 5 == 0 else ("x" * (i % 40)) for i in range(n)],
        }
    )
    targets = [
        dd.contacts(1),
        dd.contacts(1, upload="json"),
        dd.transactional_data("t", key="key"),
        dd.insight_data("orders", scope="contact", type="orders", key="key"),
        qx.transaction_contacts("POOL_1", "CG_1", transaction_fields=["key"]),
        dn.contacts(columns=["contact_key", "email", "note"]).with_limits(max_bytes=20_000),
    ]
    segments = []
    real = _buffers.segments
    monkeypatch.setattr(_buffers, "segments", lambda *a: segments.append(s := real(*a)) or s)

    def bodies(frame, t, share):
        monkeypatch.setattr(_buffers, "SHARE_MAX_RUNS", 10**9 if share else 0)
        monkeypatch.setattr(_buffers, "SHARE_MIN_RUN", 1 if share else 10**9)
        segments.clear()
        out = [(p.partition, p.rows.to_list(), p.body) for p in frame.crm.payloads(t)]
        assert all(len(s[1]) > 1 for s in segments) if share else all(len(s[1]) == 1 for s in segments)
        return out

    for t in targets:
        frame = df.rename({"key": "contact_key"}) if t.name == "dengage.contacts" else df
        if t.name == "dotdigital.contacts":
            frame = frame.drop("key").with_columns(pl.col("note").str.slice(0, 3))  # rows under 13 bytes
        shared, copied = bodies(frame, t, True), bodies(frame, t, False)
        assert shared == copied and len(shared) >= 1, t.name
        surveyed = _pipeline.survey(frame, t)
        assert surveyed.hashes == [_pipeline.body_hash(body) for _, _, body in shared], t.name
        assert surveyed.plan.partitions["bytes"].to_list() == [len(body) for _, _, body in shared], t.name


def test_stopping_early_leaves_no_encode_thread_behind(conns):
    import threading

    dd = conns[0]
    df = pl.DataFrame({"key": [f"k{i}" for i in range(5000)], "email": [f"u{i}@x.io" for i in range(5000)]})
    t = dd.insight_data("orders", scope="contact", type="orders", key="key").with_limits(max_records=100)
    it = cf.payloads(df, t, chunk_rows=50)
    first = next(it)
    it.close()  # the caller stops after one request: queued batches are dropped
    assert first.rows.to_list() == list(range(100))
    assert not [th for th in threading.enumerate() if th.name.startswith("crmframes-encode")]


def test_a_query_that_fails_raises_from_payloads_and_does_not_hang(conns):
    lf = pl.LazyFrame({"key": ["1", "x"], "email": ["a@x.io", "b@x.io"]}).with_columns(
        pl.col("key").str.to_integer()
    )  # fails when collected
    t = conns[0].insight_data("orders", scope="contact", type="orders", key="key")
    with pytest.raises(pl.exceptions.ComputeError):
        list(lf.crm.payloads(t))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds("{}@{}.{}".format, _part, _part, _part), min_size=1, max_size=50))
def test_an_address_the_email_check_accepts_never_needs_csv_quoting(values):
    """Dotdigital contacts write the email cell unquoted (see DotdigitalContacts.bind)."""
    from crmframes._checks import email as email_check
    from crmframes._encode import csv_quote

    df = pl.DataFrame({"e": values}, schema={"e": pl.String})
    out = df.select(email_check("e").invalid.alias("bad"), csv_quote(pl.col("e")).alias("q"))
    for value, bad, quoted in zip(values, out["bad"], out["q"], strict=True):
        assert bad or quoted == value
