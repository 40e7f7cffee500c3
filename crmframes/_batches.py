"""Reading a frame in bounded batches: eager frames in zero-copy slices, lazy frames slice
by slice where each slice reads only its own rows (one parquet or IPC scan), else with
``collect_batches``, so a file larger than memory is never collected whole."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

Frame = pl.DataFrame | pl.LazyFrame
# Rows per batch, sized by encoded bytes: a batch's memory (its encoded rows and the
# intermediates that build them) grows with its bytes, not its rows, and about six batches
# are in flight (see _pipeline._encoded). Measured, 1M rows, peak above a warm process:
# D·engage (243 B a row) 149 MB at 49,152 rows a batch, 55 MB at 16,384; Insight (283 B)
# 241 → 168 MB; contacts (108 B) 171 → 107 MB; encoding time within noise.
BATCH_BYTES = 4_000_000
CHUNK_ROWS = 49_152  # at most, whatever the rows' size (the former fixed size)
MIN_CHUNK_ROWS = 4_096  # at least, so very long rows still batch
PROBE_ROWS = 2_048  # rows encoded up front to measure a row's bytes


def rows_for(bytes_per_row: float) -> int:
    """Rows per batch for rows of this encoded size (``BATCH_BYTES`` a batch)."""
    return max(MIN_CHUNK_ROWS, min(CHUNK_ROWS, int(BATCH_BYTES / max(bytes_per_row, 1.0))))


def head(frame: Frame, rows: int) -> pl.DataFrame:
    """The first ``rows`` rows (a lazy frame reads only those)."""
    return frame.head(rows) if isinstance(frame, pl.DataFrame) else frame.head(rows).collect()


def schema_of(frame: Frame) -> pl.Schema:
    return frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema


def batches(frame: Frame, chunk_rows: int) -> Iterator[pl.DataFrame]:
    if isinstance(frame, pl.LazyFrame):
        if sliceable(frame, chunk_rows):
            rows = frame.select(pl.len()).collect().item()  # parquet / IPC: from the metadata
            for offset in range(0, rows, chunk_rows):
                yield frame.slice(offset, chunk_rows).collect()
            return
        # Other queries stream; polars decodes ahead of this reader, so their peak memory
        # grows with the input (benchmarks/README.md).
        yield from frame.collect_batches(chunk_size=chunk_rows)
        return
    for offset in range(0, frame.height, chunk_rows):
        yield frame.slice(offset, chunk_rows)


NOT_ROW_WISE = ("SORT", "JOIN", "GROUP", "UNIQUE", "SLICE[", "UNION", "HCONCAT", "EXPLODE", "UNPIVOT")


def sliceable(lf: pl.LazyFrame, chunk_rows: int) -> bool:
    """True when reading the query slice by slice reads each slice's rows only: one parquet
    or IPC scan that takes the slice itself (row-wise steps on top, no filter, sort or join).

    Then batches are pulled on demand and memory stays bounded by a batch (measured: 6M
    rows read in 0.8 s with a 160 MB peak); a filter or a CSV scan would make every slice
    rescan from the start, so those stream with ``collect_batches`` instead.
    """
    plan = lf.slice(0, chunk_rows).explain()
    scans = plan.count(" SCAN ")
    return (
        scans == 1
        and ("Parquet SCAN" in plan or "Ipc SCAN" in plan)
        and "SLICE: Positive" in plan
        and "SELECTION" not in plan
        and not any(w in plan for w in NOT_ROW_WISE)
    )
