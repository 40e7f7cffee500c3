"""Property tests: for random frames and limits, every target's bodies are within every
limit, carry each valid row exactly once in input order, and decode back to the input."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crmframes as cf
from tests.conftest import connections, decode

NASTY = [
    '"',
    ",",
    "\n",
    "\r\n",
    "\u2028",
    "\u2029",
    "\\",
    "\x01",
    "\t",
    " lead",
    "trail ",
    "é李😀",
    "</script>",
    "null",
    "",
]
text = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=["Cs"]), max_size=60),
    st.text(alphabet='abc ,"\n', min_size=100, max_size=400),  # long values: wide rows
)
local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_+-éü", min_size=1, max_size=20)


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 40))
    locals_ = draw(st.lists(local, min_size=n, max_size=n))
    return pl.DataFrame(
        {
            "email": [f"{u}{i}@example.com" for i, u in enumerate(locals_)],
            "key": [f"k{i}" for i in range(n)],
            "note": draw(st.lists(st.one_of(st.none(), text), min_size=n, max_size=n)),
            "n": draw(st.lists(st.one_of(st.none(), st.integers(-(2**53), 2**53)), min_size=n, max_size=n)),
            "f": draw(
                st.lists(
                    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
                    min_size=n,
                    max_size=n,
                )
            ),
            "b": draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)),
            "d": draw(
                st.lists(
                    st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(2100, 1, 1))), min_size=n, max_size=n
                )
            ),
            "ts": draw(
                st.lists(
                    st.one_of(
                        st.none(),
                        st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)).map(
                            lambda x: x.replace(microsecond=x.microsecond // 1000 * 1000)
                        ),
                    ),
                    min_size=n,
                    max_size=n,
                )
            ),
        },
        schema={
            "email": pl.String,
            "key": pl.String,
            "note": pl.String,
            "n": pl.Int64,
            "f": pl.Float64,
            "b": pl.Boolean,
            "d": pl.Date,
            "ts": pl.Datetime("us"),
        },
    )


def targets() -> list[cf.Target]:
    dd, qx, dn = connections()
    return [
        dd.contacts(1),
        dd.contacts(2, 0, upload="json"),
        dd.transactional_data("orders", key="key", contact="email"),
        dd.insight_data("orders", scope="contact", type="orders", key="key"),
        dd.insight_data("catalog_x", scope="account", type="catalog", key="key", fields=["note", "n", "f"]),
        qx.transaction_contacts("POOL_x", "CG_y", transaction_fields=["key", "n"], batch_id="BT_123"),
        dn.contacts(columns=["contact_key", "email", "note", "n", "f", "b", "d", "ts"]),  # the import-enabled set
    ]


def _same(got: object, value: object, as_text: bool) -> bool:
    """Does a decoded value equal the input value, as this vendor encodes that type?"""
    if isinstance(value, bool):
        return got == ("true" if value else "false") if as_text else got is value
    if isinstance(value, float):
        return float(got) == value  # type: ignore[arg-type]
    if isinstance(value, int):
        return (int(got) if as_text else got) == value  # type: ignore[call-overload]
    if isinstance(value, dt.datetime):
        return isinstance(got, str) and dt.datetime.fromisoformat(got) == value
    if isinstance(value, dt.date):
        return got == value.isoformat()
    return got == value


def expected_fields(target: cf.Target, record: dict, row: dict) -> dict[str, tuple[object, object, bool]]:
    """{column: (decoded value or MISSING, input value, decoded as text)} for one record."""
    name = target.name
    free = [c for c in row if c not in ("email", "key")]
    if name == "dotdigital.contacts":
        out = {"email": (record["Email"], row["email"], True)}
        out |= {c: (record[c], row[c], True) for c in free}
        return out
    if name == "dotdigital.transactional_data":
        assert record["contactIdentifier"] == row["email"] and record["key"] == row["key"]
        return {c: (record["json"].get(c, MISSING), row[c], False) for c in free}
    if name == "dotdigital.insight_data":
        assert record["key"] == row["key"]
        if target.scope == "contact":
            assert record["contactIdentity"] == {"identifier": "email", "value": row["email"]}
            cols = free
        else:
            assert "contactIdentity" not in record
            cols = list(target.fields)
        assert set(record["json"]) <= set(cols)
        return {c: (record["json"].get(c, MISSING), row[c], False) for c in cols}
    if name == "qualtrics.transaction_contacts":
        assert record["email"] == row["email"]
        emb, tr = record.get("embeddedData", {}), record.get("transactionData", {})
        out = {c: (tr.get(c, MISSING), row[c], True) for c in ("key", "n")}
        out |= {c: (emb.get(c, MISSING), row[c], True) for c in ("note", "f", "b", "d", "ts")}
        return out
    if name == "dengage.contacts":
        return {c: (record.get("contact_key" if c == "key" else c, MISSING), row[c], False) for c in row}
    raise AssertionError(name)


MISSING = object()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    df=frames(),
    max_bytes=st.integers(700, 6000),
    max_records=st.integers(1, 25),
    chunk=st.integers(1, 50),
    lazy=st.booleans(),
)
def test_bodies_respect_limits_keep_rows_once_in_order_and_decode_to_input(df, max_bytes, max_records, chunk, lazy):
    rows = df.to_dicts()
    for base in targets():
        lim = {"max_records": min(max_records, base.limits.max_records or max_records)}
        if base.limits.max_bytes is not None:
            lim["max_bytes"] = max_bytes
        t = base.with_limits(**lim)
        frame = df.rename({"key": "contact_key"}) if t.name == "dengage.contacts" else df
        frame = frame.lazy() if lazy else frame
        problems = cf.validate(frame, t, chunk_rows=chunk)
        # generated rows are valid; the only possible problem is a row too large for the random limit
        assert set(problems["code"]) <= {"row_too_large"}, problems
        invalid = set(problems["row"].to_list())
        sent: list[int] = []
        for p in cf.payloads(frame, t, chunk_rows=chunk):
            if t.limits.max_bytes is not None:
                assert len(p.body) <= t.limits.max_bytes
            assert 1 <= len(p.rows) <= t.limits.max_records
            records = decode(t, p.body)
            assert len(records) == len(p.rows)
            for record, r in zip(records, p.rows.to_list(), strict=True):
                as_null_is_missing = t.name != "dengage.contacts"
                for col, (got, value, as_text) in expected_fields(t, record, rows[r]).items():
                    if value is None:
                        if t.name == "dotdigital.contacts":
                            assert got == "", (t.name, col)
                        elif as_null_is_missing:
                            assert got is MISSING, (t.name, col, got)
                        else:
                            assert got is None, (t.name, col, got)
                    else:
                        assert got is not MISSING and _same(got, value, as_text), (t.name, col, got, value)
            sent.extend(p.rows.to_list())
        assert sent == [i for i in range(df.height) if i not in invalid], t.name
        plan = cf.plan(frame, t, chunk_rows=chunk)
        assert plan.partitions["rows"].sum() == len(sent) and plan.invalid_rows == len(invalid)
