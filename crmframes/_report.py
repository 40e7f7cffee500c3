"""Pure builders of the result frames: vendor faults → rows, job state → status and report.

``report`` has exactly one row per input row (DESIGN §5): every row is invalid (never
sent), or belongs to one planned partition whose state decides its outcome, and rows the
vendor named in a fault are rejected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl

from crmframes._events import (
    FAILED,
    FINISHED,
    IN_DOUBT,
    NOT_SENT,
    PLANNED,
    REFUSED,
    SENDING,
    SUBMITTED,
    JobState,
    PartitionState,
)
from crmframes._flow import Fault

FAULT_SCHEMA = {"row": pl.Int64, "reason": pl.String, "detail": pl.String}
OUTCOMES = ("accepted", "rejected", "invalid", "not_sent", "in_doubt", "pending")
Outcome = pl.Enum(OUTCOMES)


def map_faults(faults: Sequence[Fault], rows: pl.Series, keys: pl.Series | None) -> tuple[pl.DataFrame, int]:
    """The rows that vendor faults name, by position or echoed key; and how many named none."""
    if not faults:
        return pl.DataFrame(schema=FAULT_SCHEMA), 0
    by_index = [f for f in faults if f.index is not None]
    by_key = [f for f in faults if f.index is None and f.key is not None]
    unmatched = len(faults) - len(by_index) - len(by_key)
    frames = []
    if by_index:
        idx = [f.index for f in by_index]
        ok = [0 <= i < len(rows) for i in idx]  # type: ignore[operator]
        unmatched += ok.count(False)
        good = [f for f, k in zip(by_index, ok, strict=True) if k]
        frames.append(pl.DataFrame({
            "row": rows.gather([int(f.index or 0) for f in good]) if good else pl.Series([], dtype=pl.Int64),
            "reason": [f.reason for f in good], "detail": [f.detail for f in good]}, schema=FAULT_SCHEMA))
    if by_key:
        wanted = pl.DataFrame({"key": [f.key for f in by_key], "reason": [f.reason for f in by_key],
                               "detail": [f.detail for f in by_key]},
                              schema={"key": pl.String, "reason": pl.String, "detail": pl.String})
        if keys is None:
            unmatched += len(by_key)
        else:
            sent = pl.DataFrame({"row": rows, "key": keys.cast(pl.String)})
            hit = wanted.join(sent, on="key", how="left")
            unmatched += hit.filter(pl.col("row").is_null()).height
            frames.append(hit.filter(pl.col("row").is_not_null()).select(FAULT_SCHEMA.keys()))
    out = pl.concat(frames) if frames else pl.DataFrame(schema=FAULT_SCHEMA)
    return out.unique("row", keep="first", maintain_order=True), unmatched


def reconciled(p: PartitionState) -> bool | None:
    """Do the vendor's totals match what was sent and the faults that came back?"""
    if p.state != FINISHED:
        return None
    faulted = 0 if p.faults is None else p.faults.height
    ok = p.unmatched == 0
    if p.imported is not None:
        ok &= p.imported == p.rows - faulted
    if p.rejected is not None:
        ok &= p.rejected == faulted
    return ok


def _time(t: float | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)


STATUS_SCHEMA: dict[str, Any] = {
    "partition": pl.Int64, "import_id": pl.String, "state": pl.String, "vendor_state": pl.String,
    "rows": pl.Int64, "bytes": pl.Int64, "submitted_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"), "retries": pl.Int64, "vendor_imported": pl.Int64,
    "vendor_rejected": pl.Int64, "rejected_rows": pl.Int64, "unmatched_faults": pl.Int64,
    "reconciled": pl.Boolean, "message": pl.String,
}


def status(state: JobState) -> pl.DataFrame:
    with state.lock:
        parts = sorted(state.partitions.values(), key=lambda p: p.partition)
        rows = [(p.partition, p.import_id, p.state, p.vendor_state, p.rows, p.bytes, _time(p.submitted_at),
                 _time(p.finished_at), p.retries, p.imported, p.rejected,
                 None if p.faults is None else p.faults.height, p.unmatched if p.state == FINISHED else None,
                 reconciled(p), p.message) for p in parts]
    return pl.DataFrame(rows, schema=STATUS_SCHEMA, orient="row")


def report(state: JobState, plan_partitions: pl.DataFrame, problems: pl.DataFrame, *,
           running: bool) -> pl.DataFrame:
    """One row per input row: ``row, partition, import_id, outcome, reason, detail``."""
    n = state.input_rows
    base = pl.DataFrame({"row": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
    invalid = (problems.filter(pl.col("row").is_not_null())
               .group_by("row", maintain_order=True)
               .agg(pl.col("code").first().alias("_inv_reason"), pl.col("problem").first().alias("_inv_detail")))
    ranges = plan_partitions.select("partition", "first_row", "last_row").sort("first_row")
    with state.lock:
        parts = list(state.partitions.values())
        pstate = pl.DataFrame(
            [(p.partition, p.import_id, p.state, p.vendor_state, p.message, p.reason) for p in parts],
            schema={"partition": pl.Int64, "import_id": pl.String, "_state": pl.String,
                    "_vendor_state": pl.String, "_message": pl.String, "_reason": pl.String}, orient="row")
        faults = [p.faults for p in parts if p.state == FINISHED and p.faults is not None and p.faults.height]
    fault_rows = (pl.concat(faults) if faults else pl.DataFrame(schema=FAULT_SCHEMA)).rename(
        {"reason": "_f_reason", "detail": "_f_detail"})
    r = (base.join_asof(ranges, left_on="row", right_on="first_row", strategy="backward")
         .join(invalid, on="row", how="left")
         .with_columns(
             pl.when(pl.col("_inv_reason").is_null() & (pl.col("row") <= pl.col("last_row")))
             .then(pl.col("partition")).otherwise(None).alias("partition"))
         .join(pstate, on="partition", how="left")
         .join(fault_rows, on="row", how="left"))
    st = pl.col("_state")
    waiting = "not sent yet" if running else "not sent: the job was stopped before this partition"
    outcome = (
        pl.when(pl.col("_inv_reason").is_not_null()).then(pl.lit("invalid"))
        .when((st == FINISHED) & pl.col("_f_reason").is_not_null()).then(pl.lit("rejected"))
        .when(st == FINISHED).then(pl.lit("accepted"))
        .when(st.is_in([FAILED, REFUSED])).then(pl.lit("rejected"))
        .when(st == IN_DOUBT).then(pl.lit("in_doubt"))
        .when(st.is_in([SUBMITTED, SENDING])).then(pl.lit("pending"))
        .otherwise(pl.lit("not_sent"))
    )
    reason = (
        pl.when(pl.col("_inv_reason").is_not_null()).then(pl.col("_inv_reason"))
        .when(st == FINISHED).then(pl.col("_f_reason"))
        .when(st == FAILED).then(pl.lit("import_failed"))
        .when(st == REFUSED).then(pl.lit("request_refused"))
        .when(st == IN_DOUBT).then(pl.lit("answer_lost"))
        .when(st.is_in([SUBMITTED, SENDING])).then(pl.lit(None, pl.String))
        .when(st == NOT_SENT).then(pl.col("_reason").fill_null("cancelled"))
        .when(st == PLANNED).then(pl.lit("waiting" if running else "stopped"))
        .otherwise(pl.lit("not_sent"))
    )
    detail = (
        pl.when(pl.col("_inv_reason").is_not_null()).then(pl.col("_inv_detail"))
        .when(st == FINISHED).then(pl.col("_f_detail"))
        .when(st.is_in([SUBMITTED, SENDING])).then(pl.lit("vendor state: ") + pl.col("_vendor_state").fill_null("sending"))
        .when(st == PLANNED).then(pl.lit(waiting))
        .otherwise(pl.col("_message"))
    )
    return r.select(
        "row", "partition",
        pl.when(pl.col("_inv_reason").is_null()).then(pl.col("import_id")).alias("import_id"),
        outcome.cast(Outcome).alias("outcome"), reason.alias("reason"), detail.alias("detail"),
    ).sort("row")
