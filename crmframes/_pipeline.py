"""validate / plan / payloads / survey: one pass over any frame, eager or lazy.

One pass per batch (``_batches``): run the target's row checks and the duplicate-key check
(``_duplicates``), encode the valid rows into their exact bytes, cut them into requests
with the carried-over ``Partitioner``, and hand each request its rows' bytes as a ``Body``
(``_buffers``: sized only, views, or written into the body as they arrive), from slices of
the encoded buffers, without re-encoding. The results are the values of ``_plan``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from crmframes import _buffers
from crmframes._batches import CHUNK_ROWS, PROBE_ROWS, Frame, batches, head, rows_for, schema_of
from crmframes._buffers import Body, Pieces, Sizes, Written
from crmframes._duplicates import duplicates
from crmframes._errors import ColumnNotFoundError, FrameError, PayloadError
from crmframes._partition import CLOSED_BY_END, Partitioner
from crmframes._plan import (
    LINEAGE_SCHEMA,
    PARTITION_SCHEMA,
    PROBLEM_SCHEMA,
    UNCHANGED_SCHEMA,
    Payload,
    Plan,
    Survey,
)
from crmframes._target import Binding, Target

__all__ = [  # what the rest of the package reads from here (the values live in _plan)
    "CHUNK_ROWS",
    "PROBLEM_SCHEMA",
    "UNCHANGED_SCHEMA",
    "Frame",
    "Payload",
    "Plan",
    "Survey",
    "bind",
    "body_hash",
    "payloads",
    "plan",
    "require_usable",
    "schema_of",
    "survey",
    "validate",
]

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

    from crmframes._baseline import Known

ENCODE_THREADS = 4  # batches encoded at once, at most polars' thread count (see _encoded)
ENCODE_AHEAD = 2  # finished batches that may wait for the partitioner: the encoders keep working while
# it copies rows into a body (measured when bodies were joined at close: Insight 0.81 → 0.72 s,
# contacts 0.83 → 0.70 s; 4 measured no faster; peak memory within noise)


def bind(frame: Frame, target: Target) -> Binding:
    if not isinstance(frame, (pl.DataFrame, pl.LazyFrame)):
        raise FrameError(f"expected a polars DataFrame or LazyFrame; got {type(frame).__name__}")
    return target.bind(schema_of(frame))


def require_usable(binding: Binding) -> None:
    """Raise when the frame cannot be encoded at all, listing every reason at once."""
    if not binding.problems:
        return
    text = "\n  - ".join(p.problem for p in binding.problems)
    cls = ColumnNotFoundError if any(p.code == "missing_column" for p in binding.problems) else FrameError
    raise cls(f"the frame cannot be sent to {binding.target.name}:\n  - {text}")


@dataclass(frozen=True)
class Diff:
    """Rows to leave out as ``unchanged`` (DESIGN §10): ``known`` decides by hash (a plan, a
    job's survey), ``rows`` repeats a survey's decision when the job sends (the same rows
    whatever the baseline holds by then)."""

    known: Known | None = None
    rows: np.ndarray | None = None  # input row numbers, sorted


@dataclass(frozen=True)
class Hashing:
    """Per row, a 64-bit hash of its key and of its exact encoded bytes, for the baseline."""

    row_seed: int  # from the request layout (``Target.layout``)
    by_record: bool  # the key is the whole record (Qualtrics transactions)


def hashing(binding: Binding) -> Hashing | None:
    from crmframes._baseline import ROW_SEED

    t = binding.target
    if t.baseline_key == "key" and binding.report_key is None:
        return None
    layout = hashlib.sha256(t.layout(binding)).digest()
    return Hashing((int.from_bytes(layout[:8], "little") ^ ROW_SEED) % 2**63, t.baseline_key == "record")


@dataclass
class _Closed:
    rows: np.ndarray
    rows_bytes: int
    closed_by: str
    body: Body  # what the request received of its rows' bytes
    keys: list[pl.Series] = field(default_factory=list)  # the echoed keys, with Body.lineage
    hashes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (key, row) per run of rows


@dataclass
class _Pass:
    """Results streamed out of one pass over the frame."""

    problems: list[pl.DataFrame] = field(default_factory=list)
    input_rows: int = 0
    # rows never sent (invalid, too large) with their keys: the lineage covers every row
    unsent: list[pl.DataFrame] = field(default_factory=list)
    unchanged: list[pl.DataFrame] = field(default_factory=list)  # (row, job_id) left out by a Diff


def _check_exprs(binding: Binding) -> list[pl.Expr]:
    return [c.invalid.fill_null(False).alias(f"_c{i}") for i, c in enumerate(binding.checks)]


def _row_problems(
    batch: pl.DataFrame,
    binding: Binding,
    rows: np.ndarray,
    dups: pl.DataFrame | None,
    masks: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Row problems of a batch and the mask of rows that passed every check.

    ``masks``: the checks' columns when the caller computed them in its own select.
    """
    import numpy as np  # numpy and pyarrow load on first use, not with `import crmframes`

    n = batch.height
    frames = []
    bad = np.zeros(n, dtype=bool)
    if binding.checks:
        if masks is None:
            masks = batch.select(_check_exprs(binding))
        for i, check in enumerate(binding.checks):
            m = masks.get_column(f"_c{i}").to_numpy()
            if m.any():
                bad |= m
                hit = rows[m]
                frames.append(
                    pl.DataFrame(
                        {
                            "row": hit,
                            "column": [check.column] * len(hit),
                            "code": [check.code] * len(hit),
                            "problem": [check.problem] * len(hit),
                        },
                        schema=PROBLEM_SCHEMA,
                    )
                )
    if dups is not None and dups.height:
        u = binding.unique
        assert u is not None
        keyed = batch.select(u.key.alias("_key")).with_columns(pl.Series("row", rows))
        joined = keyed.join(dups, on="_key", how="left", maintain_order="left")
        first = joined.get_column("_first").to_numpy()
        m = ~np.isnan(first.astype(np.float64)) & (first != rows)
        if m.any():
            bad |= m
            hit = rows[m]
            frames.append(
                pl.DataFrame(
                    {
                        "row": hit,
                        "column": [u.column] * len(hit),
                        "code": ["duplicate_key"] * len(hit),
                        "problem": [
                            f"duplicate {u.what}: the vendor rejects repeats within an import; "
                            f"row {int(f)}, the first valid row with the same value, is sent instead. "
                            "Drop or merge the duplicates."
                            for f in first[m]
                        ],
                    },
                    schema=PROBLEM_SCHEMA,
                )
            )
    return (pl.concat(frames) if frames else pl.DataFrame(schema=PROBLEM_SCHEMA)), ~bad


@dataclass
class _Encoded:
    """One batch after its checks and encoding: the valid rows and their exact bytes."""

    height: int  # input rows in the batch
    rows: np.ndarray  # input row numbers of the valid rows
    problems: pl.DataFrame
    keys: pl.Series | None
    lengths: np.ndarray  # bytes per valid row
    # with bodies: the valid rows' bytes, end to end, as consecutive views of the buffers
    # that hold them; segment i starts at byte starts[i] (see span)
    starts: np.ndarray | None = None
    segments: list[memoryview] = field(default_factory=list)
    unsent: pl.DataFrame | None = None  # rows dropped here (invalid, too large) and their keys
    unchanged: pl.DataFrame | None = None  # rows a Diff left out: (row, job_id)
    key_hash: np.ndarray | None = None  # per kept row (with Hashing)
    row_hash: np.ndarray | None = None

    def span(self, lo: int, hi: int) -> list[memoryview]:
        """Bytes ``lo:hi`` of the valid rows' bytes, without copying them."""
        assert self.starts is not None
        return _buffers.span(self.starts, self.segments, lo, hi)


def _too_large(rows: np.ndarray, lengths: np.ndarray, binding: Binding) -> pl.DataFrame:
    framing, limit = binding.framing, binding.target.limits.max_bytes
    return pl.DataFrame(
        {
            "row": rows,
            "column": [None] * len(rows),
            "code": ["row_too_large"] * len(rows),
            "problem": [
                f"this row alone encodes to {framing.body_size(int(n)):,} bytes with "
                f"the request envelope; the limit is {limit:,} bytes per request. "
                "Shorten or split its values."
                for n in lengths
            ],
        },
        schema=PROBLEM_SCHEMA,
    )


def _encode_batch(
    batch: pl.DataFrame,
    first_row: int,
    exprs: list[pl.Expr],
    binding: Binding,
    dups: Future[pl.DataFrame | None],
    fits_alone: Callable[[np.ndarray], np.ndarray],
    with_keys: bool,
    body: type[Body],
    hashed: Hashing | None = None,
    diff: Diff | None = None,
) -> _Encoded:
    """Everything a batch needs before it is cut into requests; runs on an encode thread.

    One select computes the checks, every row's encoding and its echoed key together;
    rows that fail a check, or that could not fit a request even alone, are dropped after.
    """
    import numpy as np

    rows = np.arange(first_row, first_row + batch.height, dtype=np.int64)
    out = batch.select(exprs)
    problems, ok = _row_problems(batch, binding, rows, dups.result(), out)
    lengths = out.get_column("_r").str.len_bytes().to_numpy().astype(np.int64)
    big = ok & ~fits_alone(lengths)
    if big.any():
        problems = pl.concat([problems, _too_large(rows[big], lengths[big], binding)])
        ok &= ~big
    key_hash = row_hash = None
    same = None
    if hashed is not None:
        from crmframes._baseline import KEY_SEED

        h = out.select(
            pl.col("_r").hash(seed=hashed.row_seed).alias("r"),
            *([] if hashed.by_record else [pl.col("_k").cast(pl.String).hash(seed=KEY_SEED).alias("k")]),
        )
        row_hash = h.get_column("r").to_numpy()
        key_hash = row_hash if hashed.by_record else h.get_column("k").to_numpy()
    at = None
    if diff is not None and diff.known is not None and key_hash is not None and row_hash is not None:
        at = diff.known.find(key_hash) if len(diff.known.key_hash) else None
        same = ok & diff.known.unchanged(key_hash, row_hash, at)
    elif diff is not None and diff.rows is not None and len(diff.rows):
        at = np.minimum(np.searchsorted(diff.rows, rows), len(diff.rows) - 1)
        same = ok & (diff.rows[at] == rows)
    if same is not None and same.any():
        ok &= ~same
    # the echoed keys ride along only for a lineage (a survey); hashing alone reads them above
    lineage = with_keys and body.lineage
    keys = out.get_column("_k").filter(pl.Series(ok)) if lineage else None
    done = _Encoded(batch.height, rows[ok], problems, keys, lengths[ok])
    if same is not None and same.any():
        known = diff.known if diff is not None else None
        done.unchanged = pl.DataFrame(
            {
                "row": rows[same],
                "job_id": known.written_by(at[same])
                if known is not None and at is not None
                else [None] * int(same.sum()),
            },
            schema={"row": pl.Int64, "job_id": pl.String},
        )
    if key_hash is not None and row_hash is not None:
        done.key_hash, done.row_hash = key_hash[ok], row_hash[ok]
    gone = ~ok if same is None else ~ok & ~same  # unchanged rows are no problem: not in the lineage's unsent
    if lineage and gone.any():
        done.unsent = pl.DataFrame(
            {"row": rows[gone], "key": out.get_column("_k").filter(pl.Series(gone)).cast(pl.String)}
        )
    if body.wants_bytes and ok.any():
        done.starts, done.segments = _buffers.segments(out.get_column("_r"), ok, int(done.lengths.sum()))
    return done


def batch_rows(frame: Frame, binding: Binding) -> int:
    """Rows per batch for this frame and target (``_batches.rows_for``), from the encoded size
    of its first rows."""
    assert binding.encode is not None
    sample = head(frame, PROBE_ROWS)
    if sample.height == 0:
        return CHUNK_ROWS
    nulls = frozenset(c for c, k in zip(sample.columns, sample.null_count().row(0), strict=True) if k)
    size = sample.select(binding.encode(nulls).str.len_bytes().mean()).item()
    return rows_for(float(size or 0.0))


def _encoded(
    frame: Frame,
    binding: Binding,
    chunk_rows: int | None,
    fits_alone: Callable[[np.ndarray], np.ndarray],
    with_keys: bool,
    body: type[Body],
    hashed: Hashing | None = None,
    diff: Diff | None = None,
) -> Iterator[_Encoded]:
    """Every non-empty batch, checked and encoded, in input order.

    A single ``json_encode`` runs on one core, so batches are encoded on a small thread
    pool (polars releases the GIL), a few ahead of the caller: both cores work, as in
    ``write_ndjson``, and memory stays bounded by the batches in flight. The null set is
    the batch's, so a key null only in invalid rows costs a spare strip pass. The
    duplicate-key check runs first on the pool, while the first batches encode: only their
    row problems wait for it.
    """
    from concurrent.futures import ThreadPoolExecutor

    assert binding.encode is not None
    exprs: dict[frozenset[str], list[pl.Expr]] = {}
    workers = max(1, min(ENCODE_THREADS, pl.thread_pool_size()))
    pending: deque[Future[_Encoded]] = deque()
    offset = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="crmframes-encode") as pool:
        dups = pool.submit(duplicates, frame, binding)  # first in the queue: no batch waits on a queued task
        try:
            for batch in batches(frame, chunk_rows or batch_rows(frame, binding)):
                if batch.height == 0:
                    continue
                nulls = frozenset(c for c, k in zip(batch.columns, batch.null_count().row(0), strict=True) if k)
                if nulls not in exprs:  # built here, on one thread
                    exprs[nulls] = [
                        *_check_exprs(binding),
                        binding.encode(nulls).alias("_r"),
                        *([binding.report_key.alias("_k")] if with_keys else []),  # type: ignore[union-attr]
                    ]
                pending.append(
                    pool.submit(
                        _encode_batch,
                        batch,
                        offset,
                        exprs[nulls],
                        binding,
                        dups,
                        fits_alone,
                        with_keys,
                        body,
                        hashed,
                        diff,
                    )
                )
                offset += batch.height
                if len(pending) > workers + ENCODE_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the caller stopped early: drop what is queued
            for f in pending:
                f.cancel()


def run(
    frame: Frame,
    binding: Binding,
    *,
    body: type[Body] = Sizes,
    chunk_rows: int | None = None,
    stats: _Pass | None = None,
    diff: Diff | None = None,
    hashed: Hashing | None = None,
) -> Iterator[_Closed]:
    """Yield each closed partition in order; problems and counts go to ``stats``.

    ``body`` is what each request receives of its rows' bytes (``_buffers``): ``Sizes``
    nothing (a plan), ``Pieces`` views of the encoded batches (a survey hashes them), and
    ``Written`` the body itself, written as each batch arrives, so a batch's buffers go at
    once and the peak holds one body, not a body and the buffers it is copied from (1M
    rows, 50 MB bodies each let go once read, as the engine does: peak 4.9× → 2.7–3.2× the
    frame for contacts, 4.4× → 3.2–3.3× for Insight; same CPU as one join).

    ``diff`` leaves out rows found unchanged (to ``stats.unchanged``); ``hashed`` adds each
    kept row's key and row hashes to the partitions (a job's lineage, for its baseline).
    """
    import numpy as np

    require_usable(binding)
    stats = stats if stats is not None else _Pass()
    lim = binding.target.limits
    budget = binding.framing.row_budget(lim.max_bytes)
    part = Partitioner(budget, lim.max_records)
    open_rows: list[np.ndarray] = []
    open_body = body(binding.framing)
    open_keys: list[pl.Series] = []
    open_hashes: list[tuple[np.ndarray, np.ndarray]] = []
    needs_key = hashed is not None and not hashed.by_record
    with_keys = (body.lineage or needs_key) and binding.report_key is not None
    open_bytes = 0
    for b in _encoded(frame, binding, chunk_rows, part.fits_alone, with_keys, body, hashed, diff):
        stats.input_rows += b.height
        if b.problems.height:
            stats.problems.append(b.problems)
        if b.unsent is not None:
            stats.unsent.append(b.unsent)
        if b.unchanged is not None:
            stats.unchanged.append(b.unchanged)
        rows, lengths, keys = b.rows, b.lengths, b.keys
        offs = np.concatenate([[0], np.cumsum(lengths)]) if body.wants_bytes else None  # row i: offs[i]:offs[i+1]
        for cut in part.feed(lengths):
            if cut.stop > cut.start:
                open_rows.append(rows[cut.start : cut.stop])
                open_bytes += int(lengths[cut.start : cut.stop].sum())
                if offs is not None:
                    open_body.add(b.span(int(offs[cut.start]), int(offs[cut.stop])))
                if keys is not None:
                    open_keys.append(keys.slice(cut.start, cut.stop - cut.start))
                if b.key_hash is not None and b.row_hash is not None:
                    open_hashes.append((b.key_hash[cut.start : cut.stop], b.row_hash[cut.start : cut.stop]))
            if cut.closes is not None:
                yield _Closed(np.concatenate(open_rows), open_bytes, cut.closes, open_body, open_keys, open_hashes)
                open_rows, open_keys, open_hashes, open_bytes = [], [], [], 0
                open_body = body(binding.framing)
    if part.finish():
        yield _Closed(np.concatenate(open_rows), open_bytes, CLOSED_BY_END, open_body, open_keys, open_hashes)


def collect_problems(stats: _Pass, binding: Binding) -> pl.DataFrame:
    frame_level = pl.DataFrame(
        {
            "row": [p.row for p in binding.problems],
            "column": [p.column for p in binding.problems],
            "code": [p.code for p in binding.problems],
            "problem": [p.problem for p in binding.problems],
        },
        schema=PROBLEM_SCHEMA,
    )
    frames = [frame_level, *stats.problems]
    return pl.concat(frames).sort("row", nulls_last=False, maintain_order=True)


# --- the public verbs ----------------------------------------------------------


def validate(frame: Frame, target: Target, *, chunk_rows: int | None = None) -> pl.DataFrame:
    """Problems as a frame ``(row, column, code, problem)``; empty means clean."""
    import numpy as np

    binding = bind(frame, target)
    stats = _Pass()
    if binding.problems:
        # The frame cannot be encoded; still report every row-level problem we can check,
        # repeated keys included, so fixing the frame reveals no new ones
        dups = duplicates(frame, binding)
        for batch in batches(frame, chunk_rows or CHUNK_ROWS):
            rows = np.arange(stats.input_rows, stats.input_rows + batch.height, dtype=np.int64)
            stats.input_rows += batch.height
            problems, _ = _row_problems(batch, binding, rows, dups)
            if problems.height:
                stats.problems.append(problems)
        return collect_problems(stats, binding)
    for _ in run(frame, binding, chunk_rows=chunk_rows, stats=stats):
        pass
    return collect_problems(stats, binding)


def plan(frame: Frame, target: Target, *, chunk_rows: int | None = None, skip_unchanged: bool = False) -> Plan:
    """One row per request that would be sent. ``skip_unchanged``: leave out the rows whose key
    and exact encoded bytes equal what the vendor last accepted for this destination."""
    binding = bind(frame, target)
    summary = _Summary(binding)
    diff, hashed = _diff(binding, skip_unchanged)
    for closed in run(frame, binding, chunk_rows=chunk_rows, stats=summary.stats, diff=diff, hashed=hashed):
        summary.add(closed, binding.framing.body_size(closed.rows_bytes))
    return summary.plan()


def _diff(binding: Binding, skip_unchanged: bool) -> tuple[Diff | None, Hashing | None]:
    if not skip_unchanged:
        return None, None
    from crmframes import _baseline

    require_usable(binding)
    hashed = hashing(binding)
    if hashed is None:
        raise FrameError(
            f"{binding.target.name}: skip_unchanged needs each row's key, and this frame has none "
            "the target reads (e.g. an email column)"
        )
    return Diff(known=_baseline.load(binding.target)), hashed


class _Summary:
    """The plan that ``plan`` and ``survey`` both build: one row per closed partition, then the
    problems, invalid and unchanged rows of the pass."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.stats = _Pass()
        self.parts: list[tuple[int, int, int, int, int, str]] = []

    def add(self, closed: _Closed, size: int) -> int:
        """Record one closed partition of ``size`` bytes; its partition number."""
        i = len(self.parts)
        self.parts.append((i, len(closed.rows), size, int(closed.rows[0]), int(closed.rows[-1]), closed.closed_by))
        return i

    def plan(self) -> Plan:
        stats, binding = self.stats, self.binding
        partitions = pl.DataFrame(self.parts, schema=PARTITION_SCHEMA, orient="row")
        problems = collect_problems(stats, binding)
        invalid = problems.filter(pl.col("row").is_not_null()).get_column("row").n_unique()
        unchanged = pl.concat(stats.unchanged).sort("row") if stats.unchanged else pl.DataFrame(schema=UNCHANGED_SCHEMA)
        return Plan(binding.target, partitions, problems, stats.input_rows, invalid, binding.notes, unchanged)


def payloads(
    frame: Frame, target: Target, *, chunk_rows: int | None = None, skip_rows: np.ndarray | None = None
) -> Generator[Payload, None, None]:
    """Lazily yield every request body; the frame is read once, one batch at a time.
    ``skip_rows``: input rows a job's survey found unchanged (sorted), left out the same way."""
    binding = bind(frame, target)
    require_usable(binding)  # fail at the call, not at the first next()
    diff = Diff(rows=skip_rows) if skip_rows is not None and len(skip_rows) else None
    return _payloads(frame, binding, chunk_rows, diff)


def _payloads(
    frame: Frame, binding: Binding, chunk_rows: int | None, diff: Diff | None = None
) -> Generator[Payload, None, None]:
    for i, closed in enumerate(run(frame, binding, body=Written, chunk_rows=chunk_rows, diff=diff)):
        yield _payload(i, closed, binding)  # no local keeps the body once the caller lets it go


def _payload(i: int, closed: _Closed, binding: Binding) -> Payload:
    framing, limit = binding.framing, binding.target.limits.max_bytes
    assert isinstance(closed.body, Written)
    body = closed.body.finish()
    expected = framing.body_size(closed.rows_bytes)
    if len(body) != expected or (limit is not None and len(body) > limit):
        raise PayloadError(
            f"partition {i}: body is {len(body)} bytes, sized as {expected} (limit {limit}); please report this bug"
        )
    return Payload(i, pl.Series("row", closed.rows, dtype=pl.Int64), body, framing.content_type)


def body_hash(*chunks: bytes | memoryview) -> str:
    """SHA-256 of a body, given whole or as the consecutive chunks that make it up."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def survey(frame: Frame, target: Target, *, chunk_rows: int | None = None, skip_unchanged: bool = False) -> Survey:
    """The plan, each partition's content hash, and the lineage: every row's partition, key
    and (for the baseline) key and row hashes."""
    import numpy as np

    binding = bind(frame, target)
    require_usable(binding)
    summary = _Summary(binding)
    hashes, lineage = [], []
    framing = binding.framing
    diff, hashed = _diff(binding, skip_unchanged)
    hashed = hashed or hashing(binding)  # the baseline learns from every job, not only skipping ones
    for closed in run(
        frame, binding, body=Pieces, chunk_rows=chunk_rows, stats=summary.stats, diff=diff, hashed=hashed
    ):
        assert isinstance(closed.body, Pieces)
        chunks = framing.chunks(closed.body.pieces)  # hashed in place: the body is never joined here
        i = summary.add(closed, sum(len(c) for c in chunks))
        hashes.append(body_hash(*chunks))
        n = len(closed.rows)
        keys = (
            pl.concat(closed.keys).cast(pl.String) if closed.keys else pl.repeat(None, n, dtype=pl.String, eager=True)
        )
        kh = np.concatenate([k for k, _ in closed.hashes]) if closed.hashes else None
        rh = np.concatenate([r for _, r in closed.hashes]) if closed.hashes else None
        lineage.append(
            pl.DataFrame(
                {
                    "partition": pl.repeat(i, n, dtype=pl.Int64, eager=True),
                    "row": closed.rows,
                    "key": keys,
                    "key_hash": kh,
                    "row_hash": rh,
                },
                schema=LINEAGE_SCHEMA,
            )
        )
    lineage += [
        u.select(
            pl.lit(None, pl.Int64).alias("partition"),
            pl.col("row").cast(pl.Int64),
            "key",
            pl.lit(None, pl.UInt64).alias("key_hash"),
            pl.lit(None, pl.UInt64).alias("row_hash"),
        )
        for u in summary.stats.unsent
    ]  # never sent: no partition, the key still identifies the row
    return Survey(summary.plan(), hashes, pl.concat(lineage) if lineage else pl.DataFrame(schema=LINEAGE_SCHEMA))
