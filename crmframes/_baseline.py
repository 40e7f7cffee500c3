"""What the vendor is known to hold, per destination: the baseline of ``skip_unchanged``
(DESIGN §10).

For each key the vendor confirmed ``accepted``: a 64-bit hash of the key and a 64-bit hash
of the row's exact encoded bytes (the bytes the vendor received for it, before framing,
seeded with the request layout — a CSV header, a D·engage column list — so the same cells
under other field names read as changed), and which job wrote it. A row whose key and
hash match is ``unchanged`` and is not sent again.

On disk, beside the journal (``$CRMFRAMES_HOME/baselines/<destination>/``): a base file and
delta files, each written to a temporary name and renamed, so a crash never leaves a
half-written file. A delta holds the rows one partition's verdict accepted, written as the
partition settles; when a job ends its deltas are folded into a new base. Readers take the
newest base and the deltas written after it, the latest entry of a key winning. Rejected,
in-doubt and invalid rows never enter. The polars version that hashed is recorded: a
baseline hashed by another version is ignored (every row reads changed), never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from crmframes._journal import home, private_dir, private_file

if TYPE_CHECKING:
    import numpy as np

    from crmframes._target import Target

SCHEMA = {"key_hash": pl.UInt64, "row_hash": pl.UInt64, "job": pl.UInt32}
KEY_SEED = 0x6B657973  # seeds of polars' 64-bit hash: fixed, so hashes agree across runs
ROW_SEED = 0x726F7773
_LOCK = threading.Lock()


def destination(target: Target) -> str:
    """Where the rows land, without any secret: vendor account (user or host), base URL and
    the target's destination (address book, collection, mailing list)."""
    return f"{target.name}|{target.connection.identity()}|{target.destination()}"


def folder(target: Target) -> Path:
    return home() / "baselines" / hashlib.sha256(destination(target).encode()).hexdigest()[:20]


@dataclass
class Known:
    """A destination's baseline in memory: keys sorted, for vectorised lookups per batch."""

    key_hash: np.ndarray  # uint64, sorted
    row_hash: np.ndarray  # uint64, aligned
    job: np.ndarray  # uint32 index into ``jobs``
    jobs: list[tuple[str, float]]  # (job id, when written)

    @functools.cached_property
    def _index(self) -> tuple[np.ndarray, np.uint64, int]:
        """Where each slice of the hash space starts in the sorted keys (about four keys a
        slice; the hashes are uniform), the shift that maps a hash to its slice, and the
        binary-search steps the fullest slice needs."""
        import numpy as np

        n = len(self.key_hash)
        bits = max(1, min(32, int(np.log2(max(n, 8) / 4))))
        shift = np.uint64(64 - bits)
        starts = np.searchsorted(self.key_hash, np.arange(2**bits, dtype=np.uint64) << shift)
        starts = np.append(starts, n).astype(np.int32 if n < 2**31 else np.int64)
        steps = int(np.ceil(np.log2(int(np.diff(starts).max(initial=0)) + 1)))
        return starts, shift, steps

    def find(self, key_hash: np.ndarray) -> np.ndarray:
        """Where each key would sit in the sorted keys (its leftmost place, at most the last).

        A query's slice of the hash space bounds its place to a few keys, found by a short
        vectorised binary search: batch size does not change the cost per key, unlike one
        ``searchsorted`` over all keys (1M keys, 14k-row batches: 0.065 s against 0.112;
        10M keys: 0.09 against 0.47, plus 0.08 once to build the index)."""
        import numpy as np

        n = len(self.key_hash)
        if n == 0:
            return np.zeros(len(key_hash), dtype=np.int64)
        starts, shift, steps = self._index
        q = key_hash.astype(np.uint64, copy=False)
        slot = (q >> shift).astype(np.int64)
        lo, hi = starts[slot].astype(np.int64), starts[slot + 1].astype(np.int64)
        for _ in range(steps):
            mid = (lo + hi) >> 1
            below = self.key_hash[np.minimum(mid, n - 1)] < q
            open_ = lo < hi
            lo = np.where(open_ & below, mid + 1, lo)
            hi = np.where(open_ & ~below, mid, hi)
        return np.minimum(lo, n - 1)

    def unchanged(self, key_hash: np.ndarray, row_hash: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Mask of rows whose key the baseline holds with the same row hash."""
        import numpy as np

        if not len(self.key_hash):
            return np.zeros(len(key_hash), dtype=bool)
        at = self.find(key_hash) if at is None else at
        return (self.key_hash[at] == key_hash) & (self.row_hash[at] == row_hash)

    @functools.cached_property
    def _job_ids(self) -> pl.Series:
        return pl.Series("job_id", [j for j, _ in self.jobs], dtype=pl.String)

    def written_by(self, at: np.ndarray) -> pl.Series:
        """The job that wrote the keys at these places, gathered without a Python loop."""
        return self._job_ids.gather(self.job[at])


def _meta(path: Path) -> dict[str, Any]:
    meta = pl.read_parquet_metadata(path)
    return json.loads(meta.get("crmframes", "{}"))


def _files(d: Path) -> tuple[Path | None, list[Path]]:
    """The newest base and the deltas written after it, in order."""
    if not d.exists():
        return None, []
    bases = sorted(d.glob("base-*.parquet"))
    base = bases[-1] if bases else None
    since = base.stem.split("-", 1)[1] if base else ""
    deltas = sorted(p for p in d.glob("delta-*.parquet") if p.stem.split("-", 1)[1] > since)
    return base, deltas


def _read(d: Path) -> tuple[pl.DataFrame, list[tuple[str, float]]]:
    """Every key's latest entry, and the jobs the ``job`` column indexes."""
    base, deltas = _files(d)
    frames: list[pl.DataFrame] = []
    jobs: list[tuple[str, float]] = []
    for path in ([base] if base else []) + deltas:
        meta = _meta(path)
        if meta.get("polars") != pl.__version__:
            continue  # hashed by another polars version: not comparable, so not trusted
        offset = len(jobs)
        jobs += [(j, t) for j, t in meta.get("jobs", [])]
        frames.append(pl.read_parquet(path).with_columns((pl.col("job") + offset).cast(pl.UInt32)))
    if not frames:
        return pl.DataFrame(schema=SCHEMA), []
    if len(frames) == 1 and base is not None:
        return frames[0], jobs  # a compacted base holds each key once, sorted
    # the latest entry of a key wins (files are in write order)
    latest = pl.concat(frames).unique("key_hash", keep="last", maintain_order=True)
    return latest, jobs


def load(target: Target) -> Known:
    import numpy as np

    frame, jobs = _read(folder(target))
    if not frame.get_column("key_hash").is_sorted():
        frame = frame.sort("key_hash")
    return Known(
        frame["key_hash"].to_numpy().astype(np.uint64),
        frame["row_hash"].to_numpy().astype(np.uint64),
        frame["job"].to_numpy().astype(np.uint32),
        jobs,
    )


def _write(path: Path, frame: pl.DataFrame, jobs: list[tuple[str, float]]) -> None:
    """Write to a temporary name, then rename: a reader sees the whole file or none."""
    tmp = path.with_suffix(".tmp")
    meta = json.dumps({"polars": pl.__version__, "jobs": jobs})
    frame.select(SCHEMA.keys()).cast(pl.Schema(SCHEMA)).write_parquet(
        tmp, metadata={"crmframes": meta}, statistics=False
    )
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    private_file(tmp)
    os.replace(tmp, path)


def _stamp() -> str:
    return f"{time.time_ns():020d}"


def record(target: Target, job_id: str, key_hash: pl.Series, row_hash: pl.Series) -> None:
    """Add rows the vendor confirmed accepted (one partition's), as a delta file."""
    if not len(key_hash):
        return
    d = folder(target)
    with _LOCK:
        private_dir(d.parent)
        private_dir(d)
        frame = pl.DataFrame(
            {
                "key_hash": key_hash,
                "row_hash": row_hash,
                "job": pl.repeat(0, len(key_hash), dtype=pl.UInt32, eager=True),
            }
        )
        _write(d / f"delta-{_stamp()}-{job_id}.parquet", frame, [(job_id, time.time())])


def compact(target: Target) -> None:
    """Fold the deltas into a new base (after a job): one file to read, the same content."""
    d = folder(target)
    with _LOCK:
        base, deltas = _files(d)
        if not deltas:
            return
        frame, jobs = _read(d)
        used = frame["job"].unique().sort().to_list()
        remap = {old: new for new, old in enumerate(used)}
        frame = frame.with_columns(pl.col("job").replace_strict(remap, return_dtype=pl.UInt32))
        # named after the newest delta folded in: deltas written since (another job) still apply
        _write(d / f"base-{deltas[-1].stem.split('-', 1)[1]}.parquet", frame.sort("key_hash"), [jobs[i] for i in used])
        for old in ([base] if base else []) + deltas:
            old.unlink(missing_ok=True)


def frame(target: Target) -> pl.DataFrame:
    """``cf.baseline(t)``: one row per key the vendor is known to hold, with the job that
    wrote it and when."""
    data, jobs = _read(folder(target))
    written = pl.DataFrame(
        {"job": list(range(len(jobs))), "job_id": [j for j, _ in jobs], "written_at": [t for _, t in jobs]},
        schema={"job": pl.UInt32, "job_id": pl.String, "written_at": pl.Float64},
    )
    return data.join(written, on="job", how="left", maintain_order="left").select(
        "key_hash",
        "row_hash",
        "job_id",
        pl.from_epoch("written_at", time_unit="s").dt.replace_time_zone("UTC").alias("written_at"),
    )


def reset(target: Target) -> int:
    """Forget what the vendor is known to hold for this destination; returns how many keys."""
    import shutil

    d = folder(target)
    with _LOCK:
        n = _read(d)[0].height
        shutil.rmtree(d, ignore_errors=True)
    return n


def bytes_per_key(target: Target) -> float:
    d = folder(target)
    n = _read(d)[0].height
    size = sum(p.stat().st_size for p in d.glob("*.parquet")) if d.exists() else 0
    return size / n if n else 0.0
