"""Pure builders of the result frames: vendor faults → rows, job state → status and report.

``report`` has exactly one row per input row (DESIGN §5): every row is invalid (never
sent), or belongs to one planned partition whose state decides its outcome, and rows the
vendor named in a fault are rejected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
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
    count,
)
from crmframes._flow import Fault
from crmframes._flow import Outcome as FlowOutcome

FAULT_SCHEMA: dict[str, Any] = {"row": pl.Int64, "outcome": pl.String, "reason": pl.String, "detail": pl.String}
OUTCOMES = ("accepted", "rejected", "invalid", "unchanged", "queued", "not_sent", "in_doubt", "pending")
Outcome = pl.Enum(OUTCOMES)
_TIED = {"row": pl.Int64, "verdict": pl.String, "reason": pl.String, "detail": pl.String}


@dataclass(frozen=True)
class Verdicts:
    """What a finished import's answer says of its rows: ``rows`` holds every row that is NOT
    accepted (``rejected`` or ``in_doubt``, with reason and detail); the others are accepted."""

    rows: pl.DataFrame
    unmatched: int  # answers naming a row that was not sent (a key or position we never sent)
    reconciled: bool  # every row's outcome is tied to the answer, and the totals agree


def verdicts(outcome: FlowOutcome, early: Sequence[Fault], rows: pl.Series, keys: pl.Series | None) -> Verdicts:
    """Positive confirmation (DESIGN §5): a row is accepted only when the answer covers it —
    named as written (``outcome.named``), or absent from a fault list that reconciles with
    the vendor's totals. A row the answer cannot be tied to is ``in_doubt``, never accepted."""
    n = len(rows)
    answers = [*early, *outcome.faults]
    tied, unmatched, untied = _tie(answers, rows, keys)
    extra, extra_unmatched, _ = _tie(list(outcome.extra), rows, keys)
    rejected = _first(tied.filter(pl.col("verdict") == "rejected"))
    named = tied.filter(pl.col("verdict") == "accepted").get_column("row").unique()
    conflict = rejected.filter(pl.col("row").is_in(named.implode()))
    rejected = rejected.filter(~pl.col("row").is_in(conflict.get_column("row").implode()))
    decided = pl.concat([rejected.get_column("row"), named]).unique()
    rest = rows.filter(~rows.is_in(decided.implode()))
    loose = [f for f in untied if f.verdict == "rejected"]
    totals = outcome.totals
    parts = [
        _as(rejected, "rejected"),
        _as(conflict, "in_doubt", "contradictory", "the vendor's answer both accepts and rejects this row"),
    ]
    if outcome.named:
        if len(rest) and len(rest) == len(loose):
            # every row not named as written is one of the errors the vendor named no row for
            texts = "; ".join(dict.fromkeys(str(f.detail or f.reason) for f in loose))
            parts.append(
                _rows(
                    rest,
                    "rejected",
                    "error",
                    f"one of {len(loose)} error(s) the vendor tied to no "
                    f"contact, and not named as written: {texts[:500]}",
                )
            )
        elif len(rest):
            why = "the vendor's answer does not name this row as written (inserted/updated)"
            if loose:
                why += (
                    f"; it lists {len(loose)} error(s) it tied to no contact: "
                    + "; ".join(str(f.detail or f.reason) for f in loose)[:400]
                )
            parts.append(_rows(rest, "in_doubt", "not_confirmed", why))
        ok = not len(rest) and not conflict.height and unmatched == 0 and not untied
        return Verdicts(_done(parts), unmatched, ok)
    faulted = rejected.height + conflict.height
    imported = None if totals is None else totals.imported
    counted = None if totals is None else totals.rejected
    created = None if totals is None else totals.created
    agrees = (
        unmatched == 0
        and not untied
        and imported is not None
        and imported == n - faulted
        and (counted is None or counted == faulted)
    )
    if agrees and (created is None or created == len(rest)):
        return Verdicts(_done(parts), 0, True)
    if agrees and created == 0 and len(rest):
        parts.append(
            _rows(
                rest,
                "rejected",
                "transaction_not_created",
                "the contact was imported but the vendor created no transaction "
                "(transactions.count.created is 0): check the transaction batch",
            )
        )
        return Verdicts(_done(parts), 0, True)
    # the totals leave rows open: a per-row report decides what it names, the rest is in doubt
    by_report = _first(extra.filter(pl.col("row").is_in(rest.implode())))
    parts.append(_as(by_report.filter(pl.col("verdict") == "rejected"), "rejected"))
    left = rest.filter(~rest.is_in(by_report.get_column("row").implode()))
    why = (
        f"the vendor's answer does not reconcile with what was sent ({n:,} rows sent, {faulted:,} named in "
        f"faults; the vendor says imported {imported}, rejected {counted}"
        + (f", transactions created {created}" if created is not None else "")
        + (f"; {unmatched:,} fault(s) name no row sent" if unmatched else "")
        + (f"; {len(untied):,} answer(s) tied to no row" if untied else "")
        + "): this row is neither named in a fault nor confirmed"
    )
    parts.append(_rows(left, "in_doubt", "not_reconciled", why))
    return Verdicts(_done(parts), unmatched + extra_unmatched, False)


def _tie(answers: Sequence[Fault], rows: pl.Series, keys: pl.Series | None) -> tuple[pl.DataFrame, int, list[Fault]]:
    """Answers → rows, by position or echoed key (a free text naming exactly one key sent
    counts as naming it); how many named a row not sent; and those that name none."""
    frames = []
    unmatched = 0
    untied: list[Fault] = []
    by_index = [f for f in answers if f.index is not None]
    by_key = [f for f in answers if f.index is None and f.key is not None]
    loose = [f for f in answers if f.index is None and f.key is None]
    if loose and keys is not None:
        for f, key in zip(loose, _keys_in_texts([str(f.detail or f.reason) for f in loose], keys), strict=True):
            if key is None:
                untied.append(f)
            else:
                by_key.append(Fault(f.reason, f.detail, key=key, verdict=f.verdict))
    else:
        untied += loose
    if by_index:
        ok = [0 <= int(f.index) < len(rows) for f in by_index]  # type: ignore[arg-type]
        unmatched += ok.count(False)
        good = [f for f, k in zip(by_index, ok, strict=True) if k]
        frames.append(
            pl.DataFrame(
                {
                    "row": rows.gather([int(f.index or 0) for f in good]) if good else pl.Series([], dtype=pl.Int64),
                    "verdict": [f.verdict for f in good],
                    "reason": [f.reason for f in good],
                    "detail": [f.detail for f in good],
                },
                schema=_TIED,
            )
        )
    if by_key:
        wanted = pl.DataFrame(
            {
                "key": [f.key for f in by_key],
                "verdict": [f.verdict for f in by_key],
                "reason": [f.reason for f in by_key],
                "detail": [f.detail for f in by_key],
            },
            schema={"key": pl.String, **{k: v for k, v in _TIED.items() if k != "row"}},
        )
        if keys is None:
            unmatched += len(by_key)
        else:
            sent = pl.DataFrame({"row": rows, "key": keys.cast(pl.String)})
            hit = wanted.join(sent, on="key", how="left")
            unmatched += hit.filter(pl.col("row").is_null()).height
            frames.append(hit.filter(pl.col("row").is_not_null()).select(_TIED.keys()))
    tied = pl.concat(frames) if frames else pl.DataFrame(schema=_TIED)
    return tied, unmatched, untied


def _keys_in_texts(texts: list[str], keys: pl.Series) -> list[str | None]:
    """For each text, the one key sent that appears in it as a whole word, else None."""
    import re

    known = set(keys.cast(pl.String).drop_nulls().to_list())
    out: list[str | None] = []
    for text in texts:
        words = re.split(r"[^\w@.+\-]+", text)
        found = {w for word in words for w in (word, word.rstrip(".")) if w in known}  # a key ending a sentence
        out.append(found.pop() if len(found) == 1 else None)
    return out


def _first(tied: pl.DataFrame) -> pl.DataFrame:
    return tied.unique("row", keep="first", maintain_order=True)


def _as(tied: pl.DataFrame, outcome: str, reason: str | None = None, detail: str | None = None) -> pl.DataFrame:
    return tied.select(
        "row",
        pl.lit(outcome).alias("outcome"),
        pl.lit(reason).alias("reason") if reason else pl.col("reason"),
        (pl.lit(detail) + pl.lit(": ") + pl.col("reason").fill_null("")).alias("detail")
        if detail
        else pl.col("detail"),
    )


def _rows(rows: pl.Series, outcome: str, reason: str, detail: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"row": rows, "outcome": [outcome] * len(rows), "reason": [reason] * len(rows), "detail": [detail] * len(rows)},
        schema=FAULT_SCHEMA,
    )


def _with_outcome(faults: pl.DataFrame) -> pl.DataFrame:
    if "outcome" not in faults.columns:  # a journal written before verdicts held rejections only
        faults = faults.with_columns(pl.lit("rejected").alias("outcome"))
    return faults.select(FAULT_SCHEMA.keys()).cast(pl.Schema(FAULT_SCHEMA))


def _done(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return (
        pl.concat([p.cast(pl.Schema(FAULT_SCHEMA)) for p in parts]).sort("row")
        if parts
        else pl.DataFrame(schema=FAULT_SCHEMA)
    )


def _time(t: float | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)


STATUS_SCHEMA: dict[str, Any] = {
    "partition": pl.Int64,
    "import_id": pl.String,
    "state": pl.String,
    "vendor_state": pl.String,
    "rows": pl.Int64,
    "bytes": pl.Int64,
    "submitted_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "retries": pl.Int64,
    "vendor_imported": pl.Int64,
    "vendor_rejected": pl.Int64,
    "rejected_rows": pl.Int64,
    "in_doubt_rows": pl.Int64,
    "unmatched_faults": pl.Int64,
    "reconciled": pl.Boolean,
    "message": pl.String,
}


def status(state: JobState) -> pl.DataFrame:
    with state.lock:
        parts = sorted(state.partitions.values(), key=lambda p: p.partition)
        rows = [
            (
                p.partition,
                p.import_id,
                p.state,
                p.vendor_state,
                p.rows,
                p.bytes,
                _time(p.submitted_at),
                _time(p.finished_at),
                p.retries,
                p.imported,
                p.rejected,
                count(p.faults, "rejected") if p.state == FINISHED else None,
                count(p.faults, "in_doubt") if p.state == FINISHED else None,
                p.unmatched if p.state == FINISHED else None,
                p.reconciled if p.state == FINISHED else None,
                p.message,
            )
            for p in parts
        ]
    return pl.DataFrame(rows, schema=STATUS_SCHEMA, orient="row")


def report(
    state: JobState,
    plan_partitions: pl.DataFrame,
    problems: pl.DataFrame,
    *,
    running: bool,
    unchanged: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per input row: ``row, partition, import_id, outcome, reason, detail``."""
    n = state.input_rows
    base = pl.DataFrame({"row": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
    invalid = (
        problems.filter(pl.col("row").is_not_null())
        .group_by("row", maintain_order=True)
        .agg(pl.col("code").first().alias("_inv_reason"), pl.col("problem").first().alias("_inv_detail"))
    )
    if unchanged is not None and unchanged.height:  # never sent, like invalid rows: say why
        invalid = pl.concat(
            [
                invalid,
                unchanged.select(
                    "row",
                    pl.lit("unchanged").alias("_inv_reason"),
                    (
                        pl.lit("identical to what the vendor last accepted for this destination")
                        + pl.when(pl.col("job_id").is_not_null())
                        .then(pl.lit(" (job ") + pl.col("job_id") + pl.lit(")"))
                        .otherwise(pl.lit(""))
                        + pl.lit("; not sent")
                    ).alias("_inv_detail"),
                ),
            ]
        )
    ranges = plan_partitions.select("partition", "first_row", "last_row").sort("first_row")
    with state.lock:
        parts = list(state.partitions.values())
        pstate = pl.DataFrame(
            [(p.partition, p.import_id, p.state, p.vendor_state, p.message, p.reason) for p in parts],
            schema={
                "partition": pl.Int64,
                "import_id": pl.String,
                "_state": pl.String,
                "_vendor_state": pl.String,
                "_message": pl.String,
                "_reason": pl.String,
            },
            orient="row",
        )
        faults = [
            _with_outcome(p.faults) for p in parts if p.state == FINISHED and p.faults is not None and p.faults.height
        ]
    fault_rows = (pl.concat(faults) if faults else pl.DataFrame(schema=FAULT_SCHEMA)).rename(
        {"outcome": "_f_outcome", "reason": "_f_reason", "detail": "_f_detail"}
    )
    r = (
        base.join_asof(ranges, left_on="row", right_on="first_row", strategy="backward")
        .join(invalid, on="row", how="left")
        .with_columns(
            pl.when(pl.col("_inv_reason").is_null() & (pl.col("row") <= pl.col("last_row")))
            .then(pl.col("partition"))
            .otherwise(None)
            .alias("partition")
        )
        .join(pstate, on="partition", how="left")
        .join(fault_rows, on="row", how="left")
    )
    st = pl.col("_state")
    queued = "not sent yet" if running else "not sent yet: the job stopped first; job.wait() or cf.resume() sends it"
    outcome = (
        pl.when(pl.col("_inv_reason") == "unchanged")
        .then(pl.lit("unchanged"))
        .when(pl.col("_inv_reason").is_not_null())
        .then(pl.lit("invalid"))
        .when((st == FINISHED) & pl.col("_f_outcome").is_not_null())
        .then(pl.col("_f_outcome"))
        .when(st == FINISHED)
        .then(pl.lit("accepted"))
        .when(st.is_in([FAILED, REFUSED]))
        .then(pl.lit("rejected"))
        .when(st == IN_DOUBT)
        .then(pl.lit("in_doubt"))
        .when(st.is_in([SUBMITTED, SENDING]))
        .then(pl.lit("pending"))
        .when(st == PLANNED)
        .then(pl.lit("queued"))
        .otherwise(pl.lit("not_sent"))
    )
    reason = (
        pl.when(pl.col("_inv_reason").is_not_null())
        .then(pl.col("_inv_reason"))
        .when(st == FINISHED)
        .then(pl.col("_f_reason"))
        .when(st == FAILED)
        .then(pl.col("_vendor_state").fill_null("failed"))  # the vendor's own word
        .when(st == REFUSED)
        .then(pl.lit("request_refused"))
        .when(st == IN_DOUBT)
        .then(pl.lit("answer_lost"))
        .when(st.is_in([SUBMITTED, SENDING]))
        .then(pl.lit(None, pl.String))
        .when(st == NOT_SENT)
        .then(pl.col("_reason").fill_null("cancelled"))
        .when(st == PLANNED)
        .then(pl.lit("queued"))
        .otherwise(pl.lit("not_sent"))
    )
    detail = (
        pl.when(pl.col("_inv_reason").is_not_null())
        .then(pl.col("_inv_detail"))
        .when(st == FINISHED)
        .then(pl.col("_f_detail"))
        .when(st.is_in([SUBMITTED, SENDING]))
        .then(pl.coalesce(pl.col("_message"), pl.lit("vendor state: ") + pl.col("_vendor_state").fill_null("sending")))
        .when(st == PLANNED)
        .then(pl.lit(queued))
        .otherwise(pl.col("_message"))
    )
    return r.select(
        "row",
        "partition",
        pl.when(pl.col("_inv_reason").is_null()).then(pl.col("import_id")).alias("import_id"),
        outcome.cast(Outcome).alias("outcome"),
        reason.alias("reason"),
        detail.alias("detail"),
    ).sort("row")
