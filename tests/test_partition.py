"""The greedy partitioner: same cuts as the obvious loop, over any batch split."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from crmframes._partition import CLOSED_BY_BYTES, CLOSED_BY_RECORDS, Partitioner


def naive(lengths: list[int], budget: int | None, max_records: int | None) -> list[list[int]]:
    parts: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i, n in enumerate(lengths):
        if cur and (
            (budget is not None and size + n > budget) or (max_records is not None and len(cur) >= max_records)
        ):
            parts.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        parts.append(cur)
    return parts


def fast(lengths: list[int], budget: int | None, max_records: int | None, splits: list[int]) -> list[list[int]]:
    p = Partitioner(budget, max_records)
    parts: list[list[int]] = []
    cur: list[int] = []
    bounds = sorted({0, len(lengths), *[s for s in splits if 0 < s < len(lengths)]})
    for a, b in itertools.pairwise(bounds):
        for cut in p.feed(np.array(lengths[a:b], dtype=np.int64)):
            cur.extend(range(a + cut.start, a + cut.stop))
            if cut.closes:
                parts.append(cur)
                cur = []
    if p.finish():
        parts.append(cur)
    return parts


@settings(max_examples=400, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), max_size=200),
    budget=st.one_of(st.none(), st.integers(50, 400)),
    max_records=st.one_of(st.none(), st.integers(1, 30)),
    splits=st.lists(st.integers(0, 200), max_size=6),
)
def test_cuts_match_the_naive_loop_for_any_batch_split(lengths, budget, max_records, splits):
    assert fast(lengths, budget, max_records, splits) == naive(lengths, budget, max_records)


def test_partition_closing_reason_names_the_binding_limit():
    p = Partitioner(row_budget=10, max_records=3)
    cuts = p.feed(np.array([4, 4, 4, 1, 1, 1, 1], dtype=np.int64))
    assert [(c.start, c.stop, c.closes) for c in cuts] == [
        (0, 2, CLOSED_BY_BYTES),
        (2, 5, CLOSED_BY_RECORDS),
        (5, 7, None),
    ]
    assert p.finish()


def test_rows_that_cannot_fit_alone_are_flagged_not_cut():
    p = Partitioner(row_budget=10, max_records=None)
    assert p.fits_alone(np.array([10, 11, 3])).tolist() == [True, False, True]


def test_lazy_parquet_scans_are_read_slice_by_slice_only_when_each_slice_reads_its_own_rows(tmp_path):
    from crmframes._batches import batches as _batches
    from crmframes._batches import sliceable as _sliceable

    path = tmp_path / "t.parquet"
    pl.DataFrame({"a": list(range(10))}).write_parquet(path)
    (tmp_path / "t.csv").write_text("a\n1\n2\n")
    lf = pl.scan_parquet(path)
    assert _sliceable(lf, 4) and _sliceable(lf.rename({"a": "b"}).with_columns(c=pl.col("b") * 2), 4)
    assert not _sliceable(lf.filter(pl.col("a") > 1), 4)  # every slice would rescan from the start
    assert not _sliceable(lf.sort("a"), 4) and not _sliceable(pl.scan_csv(tmp_path / "t.csv"), 4)
    assert [b["a"].to_list() for b in _batches(lf, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b["a"].to_list() for b in _batches(lf.filter(pl.col("a") > 6), 4)] == [[7, 8, 9]]


def test_batches_are_sized_by_encoded_bytes_and_the_bodies_do_not_depend_on_it():
    import crmframes as cf
    from crmframes._batches import CHUNK_ROWS, MIN_CHUNK_ROWS, rows_for
    from crmframes._pipeline import batch_rows, bind

    t = cf.Dotdigital("u@example.com", "pw").contacts(1)
    short = pl.DataFrame({"email": [f"u{i}@x.io" for i in range(3000)]})
    long = short.with_columns(NOTE=pl.lit("x" * 2000))
    assert batch_rows(long, bind(long, t)) < batch_rows(short, bind(short, t)) <= CHUNK_ROWS
    assert rows_for(10**9) == MIN_CHUNK_ROWS and rows_for(1) == CHUNK_ROWS and rows_for(0) == CHUNK_ROWS
    assert batch_rows(short.head(0), bind(short, t)) == CHUNK_ROWS
    for frame in (long, long.lazy()):
        small = t.with_limits(max_bytes=500_000)  # several requests, cut across batches
        sized = [(p.rows.to_list(), p.body) for p in cf.payloads(frame, small)]
        fixed = [(p.rows.to_list(), p.body) for p in cf.payloads(frame, small, chunk_rows=7)]
        assert sized == fixed and len(sized) > 1
