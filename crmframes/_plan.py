"""The values a pass over a frame produces, with their reprs: ``Plan`` (what submit would
send), ``Payload`` (one request body), ``Survey`` (what a job needs before it sends), and
the frames' schemas. Plain data: no encoding, no I/O."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from crmframes._target import Target

ASSUMED_UPLOAD_BYTES_PER_S = 5_000_000  # [I] for estimates only

UNCHANGED_SCHEMA = {"row": pl.Int64, "job_id": pl.String}
PROBLEM_SCHEMA = {"row": pl.Int64, "column": pl.String, "code": pl.String, "problem": pl.String}
PARTITION_SCHEMA = {
    "partition": pl.Int64,
    "rows": pl.Int64,
    "bytes": pl.Int64,
    "first_row": pl.Int64,
    "last_row": pl.Int64,
    "closed_by": pl.String,
}


@dataclass(frozen=True)
class Payload:
    """One request body exactly as it would be sent, and the input rows inside it."""

    partition: int
    rows: pl.Series  # input row numbers (0-based), in body order
    body: bytes
    content_type: str

    def __repr__(self) -> str:
        return (
            f"Payload(partition={self.partition}, rows={len(self.rows)}, "
            f"bytes={len(self.body)}, content_type={self.content_type!r})"
        )


@dataclass(frozen=True)
class Plan:
    """What submit would send: one row per request, and what would not be sent."""

    target: Target
    partitions: pl.DataFrame
    problems: pl.DataFrame
    input_rows: int
    invalid_rows: int
    notes: tuple[str, ...] = ()  # where the columns go (e.g. Qualtrics embeddedData), from the target
    # rows left out by skip_unchanged: identical to what the vendor last accepted (row, job_id)
    unchanged: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=UNCHANGED_SCHEMA))

    @property
    def requests(self) -> int:
        return self.partitions.height

    @property
    def bytes(self) -> int:
        return int(self.partitions["bytes"].sum() or 0)

    @property
    def valid_rows(self) -> int:
        return self.input_rows - self.invalid_rows

    @property
    def unchanged_rows(self) -> int:
        return self.unchanged.height

    @property
    def rows_to_send(self) -> int:
        return self.valid_rows - self.unchanged_rows

    @property
    def estimated_seconds(self) -> float:
        """A rough duration from the target's concurrency / interval limits (not a promise)."""
        lim = self.target.limits
        n = self.requests
        if n == 0:
            return 0.0
        upload = self.bytes / ASSUMED_UPLOAD_BYTES_PER_S
        if lim.min_interval:
            return (n - 1) * lim.min_interval + lim.typical_job_seconds + upload
        slots = lim.max_concurrent or 1
        return math.ceil(n / slots) * lim.typical_job_seconds + upload

    def _summary(self) -> list[tuple[str, str]]:
        lim = self.target.limits
        limits = (
            ", ".join(
                s
                for s in (
                    f"{lim.max_bytes:,} bytes" if lim.max_bytes else "",
                    f"{lim.max_records:,} records" if lim.max_records else "",
                )
                if s
            )
            or "none"
        )
        return [
            ("target", repr(self.target)),
            ("input rows", f"{self.input_rows:,}"),
            ("valid rows", f"{self.valid_rows:,}"),
            ("invalid rows", f"{self.invalid_rows:,} (see .problems)"),
            *(
                (
                    (
                        "unchanged rows",
                        f"{self.unchanged_rows:,} (identical to what the vendor last accepted: not sent)",
                    ),
                    ("rows to send", f"{self.rows_to_send:,}"),
                )
                if self.unchanged_rows
                else ()
            ),
            ("requests", f"{self.requests:,} (limit per request: {limits})"),
            ("bytes", f"{self.bytes:,}"),
            ("estimated time", f"~{self.estimated_seconds:,.0f} s"),
            *(("columns", n) for n in self.notes),
        ]

    def __repr__(self) -> str:
        lines = ["Plan"] + [f"  {k:<15}{v}" for k, v in self._summary()]
        with pl.Config(tbl_rows=10, tbl_hide_dataframe_shape=False):
            lines.append(str(self.partitions))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
            f"{html.escape(v)}</td></tr>"
            for k, v in self._summary()
        )
        return f"<div><b>crmframes plan</b><table>{rows}</table>{self.partitions.head(20)._repr_html_()}</div>"


@dataclass(frozen=True)
class Survey:
    """What a job needs before it sends: the plan, each partition's content hash, and its
    lineage (input rows and the keys the vendor will echo), from one pass over the frame."""

    plan: Plan
    hashes: list[str]
    lineage: pl.DataFrame  # partition, row, key


LINEAGE_SCHEMA = {
    "partition": pl.Int64,
    "row": pl.Int64,
    "key": pl.String,
    "key_hash": pl.UInt64,
    "row_hash": pl.UInt64,
}
