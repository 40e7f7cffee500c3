"""The SQLite journal: every job, every partition, every vendor import id (DESIGN §6).

Lives in ``$CRMFRAMES_HOME`` (default ``~/.crmframes``): ``journal.sqlite3`` (WAL) plus,
per job, parquet files with the plan, the problems, the lineage (which input rows and
keys each partition holds) and the faults each import came back with. It is a sink of
the engine's events and writes each one before the engine makes its next call, so a
crash at any point leaves a record that ``cf.resume`` can finish from.

Never stored: credentials, tokens, request bodies. A connection is kept as its class and
host; credentials come back from the environment or ``cf.resume(..., connection=...)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from crmframes import _events as ev
from crmframes._flow import Fault
from crmframes._report import FAULT_SCHEMA
from crmframes._target import Target

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    target TEXT NOT NULL,
    options TEXT NOT NULL,       -- the target's fields (JSON), never its connection's secrets
    connection TEXT NOT NULL,    -- {"class": ..., "base_url": ...}
    input_rows INTEGER NOT NULL,
    invalid_rows INTEGER NOT NULL,
    state TEXT NOT NULL,         -- planned | running | pending | paused | done | error
    message TEXT,
    context TEXT,                -- the job's set-up result (e.g. a Qualtrics batch id), JSON
    policy TEXT NOT NULL,        -- {"max_reject_rate": ...}
    parent TEXT                  -- the job a retry_failed() job retries (its rows: parent_rows.parquet)
);
CREATE TABLE IF NOT EXISTS partitions (
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    partition INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    hash TEXT NOT NULL,          -- sha256 of the body: resume refuses a frame that changed
    state TEXT NOT NULL,         -- planned | sending | submitted | finished | failed | refused | in_doubt | not_sent
    import_id TEXT,
    vendor_state TEXT,
    submitted_at REAL,
    finished_at REAL,
    message TEXT,
    reason TEXT,
    early TEXT,                  -- faults already in the submit answer (JSON)
    imported INTEGER,
    rejected INTEGER,
    unmatched INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    reconciled INTEGER,          -- 1 when every row is tied to the vendor's answer (see _report.verdicts)
    PRIMARY KEY (job_id, partition)
);
"""
# columns added after a journal may have been created: (table, column, type)
ADDED = (("partitions", "reconciled", "INTEGER"), ("jobs", "parent", "TEXT"))


def home() -> Path:
    return Path(os.environ.get("CRMFRAMES_HOME") or Path.home() / ".crmframes")


class Journal:
    """One SQLite file shared by every job of the process (and by other processes: WAL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(root / "journal.sqlite3", check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        for f in root.glob("journal.sqlite3*"):  # the database, its WAL and shared-memory files
            private_file(f)
        for table, column, kind in ADDED:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    # --- writing ---

    def create(
        self,
        job_id: str,
        target: Target,
        survey_plan: Any,
        hashes: list[str],
        lineage: pl.DataFrame,
        policy: dict[str, Any],
        *,
        parent: str | None = None,
        parent_rows: pl.Series | None = None,
    ) -> None:
        d = self.dir(job_id)
        for folder in (d.parent, d, d / "faults"):
            private_dir(folder)
        self._write(survey_plan.partitions, d / "plan.parquet")
        self._write(survey_plan.problems, d / "problems.parquet")
        if survey_plan.unchanged_rows:
            self._write(survey_plan.unchanged, d / "unchanged.parquet")
        self._write(lineage, d / "lineage.parquet")
        if parent_rows is not None:
            self._write(pl.DataFrame({"parent_row": parent_rows.cast(pl.Int64)}), d / "parent_rows.parquet")
        conn = target.connection
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO jobs (job_id, created_at, updated_at, target, options, connection, input_rows, "
                "invalid_rows, state, message, context, policy, parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    now,
                    now,
                    target.name,
                    json.dumps(target_fields(target)),
                    json.dumps({"class": type(conn).__name__, "base_url": conn.base_url}),
                    survey_plan.input_rows,
                    survey_plan.invalid_rows,
                    "planned",
                    None,
                    None,
                    json.dumps(policy),
                    parent,
                ),
            )
            self.db.executemany(
                "INSERT INTO partitions (job_id, partition, rows, bytes, hash, state) VALUES (?,?,?,?,?,?)",
                [
                    (job_id, int(i), int(r), int(b), h, ev.PLANNED)
                    for (i, r, b), h in zip(
                        survey_plan.partitions.select("partition", "rows", "bytes").iter_rows(), hashes, strict=True
                    )
                ],
            )
            self.db.execute("COMMIT")

    def set_context(self, job_id: str, context: Any) -> None:
        self._job(job_id, context=json.dumps(context))

    def _job(self, job_id: str, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self.lock:
            self.db.execute(
                f"UPDATE jobs SET {sets}, updated_at = ? WHERE job_id = ?", (*cols.values(), time.time(), job_id)
            )

    def _part(self, job_id: str, partition: int, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self.lock:
            self.db.execute(
                f"UPDATE partitions SET {sets} WHERE job_id = ? AND partition = ?", (*cols.values(), job_id, partition)
            )

    def record(self, e: ev.Event) -> None:
        """The sink: one write per event, committed before the engine goes on."""
        j = e.job_id
        if isinstance(e, ev.Sending):
            self._part(j, e.partition, state=ev.SENDING)
            self._job(j, state="running")
        elif isinstance(e, ev.Submitted):
            early = json.dumps([dataclasses.asdict(f) for f in e.early])
            self._part(
                j,
                e.partition,
                state=ev.SUBMITTED,
                import_id=e.import_id,
                vendor_state=e.vendor_state,
                submitted_at=e.at,
                early=early,
            )
        elif isinstance(e, ev.Polled):
            self._part(j, e.partition, vendor_state=e.vendor_state)
        elif isinstance(e, ev.Unsettled):
            self._part(j, e.partition, vendor_state=e.vendor_state, message=e.message)
        elif isinstance(e, ev.Requeued):
            self._part(j, e.partition, state=ev.PLANNED, import_id=None, early=None, message=e.why)
        elif isinstance(e, ev.RetryScheduled) and e.partition is not None:
            with self.lock:
                self.db.execute(
                    "UPDATE partitions SET retries = retries + 1 WHERE job_id = ? AND partition = ?", (j, e.partition)
                )
        elif isinstance(e, ev.Settled):
            if e.faults is not None and e.faults.height:
                self._write(e.faults, self.dir(j) / "faults" / f"{e.partition}.parquet")
            self._part(
                j,
                e.partition,
                state=e.state,
                vendor_state=e.vendor_state,
                message=e.message,
                reason=e.reason,
                finished_at=e.at,
                imported=e.imported,
                rejected=e.rejected,
                unmatched=e.unmatched,
                reconciled=e.reconciled,
            )
            if e.state in (ev.FINISHED, ev.FAILED):  # a synchronous import has no Submitted event
                with self.lock:
                    self.db.execute(
                        "UPDATE partitions SET submitted_at = COALESCE(submitted_at, ?) "
                        "WHERE job_id = ? AND partition = ?",
                        (e.at, j, e.partition),
                    )
        elif isinstance(e, ev.Stopped):
            self._job(j, state=e.how, message=e.message)
        elif isinstance(e, ev.Resumed):
            self._job(j, state="running", message=None)

    # --- reading ---

    def _write(self, frame: pl.DataFrame, path: Path) -> None:
        frame.write_parquet(path)
        private_file(path)

    def jobs(self) -> pl.DataFrame:
        """One row per job: partitions counted by how they ended (or where they are)."""
        with self.lock:
            cur = self.db.execute(
                "SELECT j.job_id, j.created_at, j.updated_at, j.target, j.state, j.input_rows, j.invalid_rows, "
                "COUNT(p.partition), SUM(p.state = 'finished'), SUM(p.state = 'failed'), SUM(p.state = 'refused'), "
                "SUM(p.state = 'in_doubt'), SUM(p.state = 'not_sent'), SUM(p.state IN ('submitted', 'sending')), "
                "SUM(p.state = 'planned'), j.parent, j.message "
                "FROM jobs j LEFT JOIN partitions p USING (job_id) GROUP BY j.job_id ORDER BY j.created_at"
            )
            rows = cur.fetchall()
        schema = {
            "job_id": pl.String,
            "created_at": pl.Float64,
            "updated_at": pl.Float64,
            "target": pl.String,
            "state": pl.String,
            "input_rows": pl.Int64,
            "invalid_rows": pl.Int64,
            "partitions": pl.Int64,
            "finished": pl.Int64,
            "failed": pl.Int64,
            "refused": pl.Int64,
            "in_doubt": pl.Int64,
            "not_sent": pl.Int64,
            "in_flight": pl.Int64,
            "queued": pl.Int64,
            "parent": pl.String,
            "message": pl.String,
        }
        out = pl.DataFrame(rows, schema=schema, orient="row")
        counts = ["finished", "failed", "refused", "in_doubt", "not_sent", "in_flight", "queued"]
        return out.with_columns(
            *(
                pl.from_epoch(pl.col(c), time_unit="s").dt.replace_time_zone("UTC")
                for c in ("created_at", "updated_at")
            ),
            pl.col(counts).fill_null(0),
        )

    def prune(self, before: float) -> list[str]:
        """Remove every job last updated before ``before`` (epoch seconds), with its lineage,
        plan and faults files; returns the removed job ids."""
        with self.lock:
            ids = [r[0] for r in self.db.execute("SELECT job_id FROM jobs WHERE updated_at < ?", (before,))]
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM partitions WHERE job_id = ?", [(i,) for i in ids])
            self.db.executemany("DELETE FROM jobs WHERE job_id = ?", [(i,) for i in ids])
            self.db.execute("COMMIT")
        for i in ids:
            shutil.rmtree(self.dir(i), ignore_errors=True)
        return ids

    def parent_rows(self, job_id: str) -> pl.Series | None:
        path = self.dir(job_id) / "parent_rows.parquet"
        return pl.read_parquet(path).get_column("parent_row") if path.exists() else None

    def saved(self, job_id: str) -> Saved | None:
        """A journalled job as ``create`` wrote it, its partitions as they now stand."""
        row, parts = self.load(job_id)
        if not row:
            return None
        d = self.dir(job_id)
        unchanged = d / "unchanged.parquet"
        return Saved(
            row,
            parts,
            pl.read_parquet(d / "plan.parquet"),
            pl.read_parquet(d / "problems.parquet"),
            pl.read_parquet(unchanged) if unchanged.exists() else None,
            [p["hash"] for p in parts],
            pl.read_parquet(d / "lineage.parquet"),
            self.parent_rows(job_id),
            json.loads(row["policy"]),
            None if row["context"] is None else json.loads(row["context"]),
        )

    def replay(self, job_id: str, parts: list[dict[str, Any]], now: float) -> Iterator[ev.Event]:
        """The events that rebuild a job's state from its partitions' rows (the other half of
        ``record``). A partition that was sending at a crash, or submitted without a recorded
        answer, is in doubt: nobody saw the vendor's answer."""
        states = []
        for p in parts:
            i, state, message = p["partition"], p["state"], p["message"]
            if p["import_id"] is not None or state == ev.SUBMITTED:
                early = early_faults(p["early"])
                yield ev.Submitted(job_id, p["submitted_at"] or now, i, p["import_id"], p["vendor_state"], early)
            if state == ev.SENDING:
                state, message = ev.IN_DOUBT, "the process stopped while sending; the answer was never seen"
            elif state == ev.SUBMITTED and p["import_id"] is None:  # a synchronous answer, never recorded
                state, message = ev.IN_DOUBT, "the process stopped before the vendor's answer was recorded"
            if state in ev.SETTLED:
                faults = self.faults(job_id, i)
                if faults is None and state == ev.FINISHED:  # no file: the vendor named no row
                    faults = pl.DataFrame(schema=FAULT_SCHEMA)
                yield ev.Settled(
                    job_id,
                    p["finished_at"] or now,
                    i,
                    state,
                    p["vendor_state"],
                    message,
                    p["reason"],
                    faults,
                    p["unmatched"],
                    p["imported"],
                    p["rejected"],
                    None if p["reconciled"] is None else bool(p["reconciled"]),
                )
            elif state == ev.SUBMITTED and message:  # polling stopped at its deadline
                yield ev.Unsettled(job_id, now, i, p["vendor_state"], message)
            yield ev.Restored(job_id, now, i, p["retries"])
            states.append(state)
        if all(s in ev.SETTLED for s in states):
            yield ev.Stopped(job_id, now, "done")

    def load(self, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        with self.lock:
            self.db.row_factory = sqlite3.Row
            try:
                job = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                parts = self.db.execute(
                    "SELECT * FROM partitions WHERE job_id = ? ORDER BY partition", (job_id,)
                ).fetchall()
            finally:
                self.db.row_factory = None
        if job is None:
            return {}, []
        return dict(job), [dict(p) for p in parts]

    def faults(self, job_id: str, partition: int) -> pl.DataFrame | None:
        path = self.dir(job_id) / "faults" / f"{partition}.parquet"
        return pl.read_parquet(path) if path.exists() else None


def private_dir(path: Path) -> None:
    """A folder only its owner can open: the journal holds emails and other personal data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def private_file(path: Path) -> None:
    if path.exists():
        path.chmod(0o600)


def target_fields(target: Target) -> dict[str, Any]:
    """The target's own fields (the boundary included, so bodies hash the same on resume) and
    the limits tightened with ``with_limits`` (they decide the partitions)."""
    assert dataclasses.is_dataclass(target)
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target) if f.name != "connection"}
    vendor = type(target).limits
    tightened = {
        k: getattr(target.limits, k)
        for k in ("max_bytes", "max_records", "max_concurrent", "min_interval")
        if getattr(target.limits, k) != getattr(vendor, k)
    }
    return {**fields, "__limits__": tightened}


@dataclasses.dataclass(frozen=True)
class Saved:
    """What ``Journal.saved`` reads back of one job."""

    row: dict[str, Any]
    parts: list[dict[str, Any]]
    partitions: pl.DataFrame  # the plan's partitions
    problems: pl.DataFrame
    unchanged: pl.DataFrame | None
    hashes: list[str]
    lineage: pl.DataFrame
    parent_rows: pl.Series | None
    policy: dict[str, Any]
    context: Any


def early_faults(raw: str | None) -> tuple[Fault, ...]:
    return tuple(Fault(**f) for f in json.loads(raw)) if raw else ()


_JOURNALS: dict[Path, Journal] = {}
_LOCK = threading.Lock()


def journal() -> Journal:
    """The journal under the current ``CRMFRAMES_HOME`` (one per directory per process)."""
    root = home()
    with _LOCK:
        j = _JOURNALS.get(root)
        if j is None:
            j = _JOURNALS[root] = Journal(root)
        return j
