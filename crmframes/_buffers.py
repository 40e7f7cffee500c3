"""The encoded rows' bytes, shared from polars' own Arrow buffers without copying them, and
the three ways a pass hands them to a request: not at all (``Sizes``, a plan), as views
(``Pieces``, hashed in place by a survey) or written into the body (``Written``, payloads).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import numpy as np

    from crmframes._target import Framing

VIEW = [("len", "<i4"), ("prefix", "<i4"), ("buffer", "<i4"), ("offset", "<i4")]  # Arrow string_view
SHARE_MIN_RUN = 16  # rows per run of consecutive bytes, on average, below which a batch is copied
SHARE_MAX_RUNS = 64  # ... unless it has at most this many runs


def segments(encoded: pl.Series, ok: np.ndarray, total: int) -> tuple[np.ndarray, list[memoryview]]:
    """The bytes of the rows kept by ``ok`` (at least one), end to end, as views of polars'
    own buffers.

    polars holds strings as Arrow string views: a 16-byte view per row, and the bytes of
    rows over 12 bytes in data buffers, which ``json_encode`` and ``concat_str`` fill in
    row order. So the kept rows are a few runs of consecutive bytes (about one per data
    buffer, plus one per dropped row), shared without a copy (1M rows: 0.01 against 0.08
    CPU-s to convert to one contiguous Arrow string array). When the runs are many (short
    rows are stored inside their view) or the layout is not the one expected, the rows
    are copied into one contiguous buffer instead: the result never depends on it.
    """
    import numpy as np
    import pyarrow as pa

    arr = encoded.to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_string_view(arr.type) and arr.null_count == 0:
        bufs = arr.buffers()
        views = np.frombuffer(bufs[1], dtype=np.dtype(VIEW))[arr.offset : arr.offset + len(arr)]  # type: ignore[arg-type]
        at = np.flatnonzero(ok)
        v = views[at]
        n = v["len"].astype(np.int64)
        inline = n <= 12  # bytes kept in the view itself, after its length
        src = np.where(inline, -1, v["buffer"]).astype(np.int64)
        start = np.where(inline, (at + arr.offset) * 16 + 4, v["offset"]).astype(np.int64)
        cont = (src[1:] == src[:-1]) & (start[1:] == start[:-1] + n[:-1]) & ~inline[1:]
        heads = np.concatenate([[0], np.flatnonzero(~cont) + 1])
        if len(heads) <= max(SHARE_MAX_RUNS, len(n) // SHARE_MIN_RUN) and int(n.sum()) == total:
            sizes = np.add.reduceat(n, heads)
            segs = [
                memoryview(bufs[2 + b] if b >= 0 else bufs[1])[a : a + z]  # type: ignore[arg-type]
                for b, a, z in zip(src[heads].tolist(), start[heads].tolist(), sizes.tolist(), strict=True)
            ]
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            return starts, segs
    kept = encoded.filter(pl.Series(ok)).to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(kept, pa.ChunkedArray):
        kept = kept.combine_chunks()
    _, offs_buf, data_buf = kept.buffers()
    offs = np.frombuffer(offs_buf, dtype=np.int64)[kept.offset : kept.offset + len(kept) + 1]  # type: ignore[arg-type]
    return np.zeros(1, np.int64), [memoryview(data_buf)[int(offs[0]) : int(offs[-1])]]  # type: ignore[arg-type]


def span(starts: np.ndarray, segs: list[memoryview], lo: int, hi: int) -> list[memoryview]:
    """Bytes ``lo:hi`` of consecutive segments (segment i starts at byte ``starts[i]``),
    without copying them."""
    import numpy as np

    i = int(np.searchsorted(starts, lo, side="right")) - 1
    out = []
    while lo < hi:
        start, seg = int(starts[i]), segs[i]
        stop = min(hi, start + len(seg))
        out.append(seg[lo - start : stop - start])
        lo, i = stop, i + 1
    return out


class Body:
    """What one request receives of its rows' bytes, in order; ``wants_bytes`` False: none.
    A pass makes one per request, ``kind(framing)``."""

    wants_bytes = True
    lineage = False  # the pass also keeps each row's echoed key (a survey's lineage)

    def __init__(self, framing: Framing) -> None:
        pass

    def add(self, views: list[memoryview]) -> None:
        raise NotImplementedError


class Sizes(Body):
    """No body: the requests are only sized (``plan``)."""

    wants_bytes = False

    def add(self, views: list[memoryview]) -> None:
        pass


class Pieces(Body):
    """The rows' bytes as views of the encoded batches, for a reader that never needs them
    joined (``survey`` hashes them in place)."""

    lineage = True

    def __init__(self, framing: Framing) -> None:
        self.pieces: list[memoryview] = []

    def add(self, views: list[memoryview]) -> None:
        self.pieces += views


class Written(Body):
    """The body itself, rows written in as each batch arrives (``payloads``): a batch's buffers
    go at once, so the peak holds one body, not a body and the buffers it is copied from."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.buf: io.BytesIO | None = framing.start()

    def add(self, views: list[memoryview]) -> None:
        assert self.buf is not None
        for view in views:
            self.buf.write(view)

    def finish(self) -> bytes:
        """The whole body; the buffer is handed over, not copied, and this object is spent."""
        buf, self.buf = self.buf, None
        assert buf is not None
        return self.framing.finish(buf)
