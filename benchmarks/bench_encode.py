"""Encode + exact partitioning throughput on a 1M-row frame, as ratios measured in one run.

    python benchmarks/bench_encode.py [--rows N] [--repeat K]

For each target: time to produce every request body (``payloads``, i.e. validation,
encoding, partitioning and assembly), compared on the same frame with
``DataFrame.write_ndjson`` (``write_csv`` for the CSV target) and with a per-row
``json.dumps`` loop. Prints one line per target; exits 1 if the floor of DESIGN §8 as
revised (≥ 0.40× the polars writer, ≥ 8× the loop, for every target) is missed: encoding
costs ~1 s per 1M rows against minutes of vendor time, so this is a floor that must not
regress, not the goal to chase (the headline goal is sending only what changed,
bench_unchanged.py). The floor is judged on
``payloads``; the last column shows, for information only, ``plan`` (the same checks,
encoding and exact partitioning, without joining the bodies), so the cost of assembling
the bodies can be read off.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
import polars as pl

import crmframes as cf

FLOOR_WRITER, FLOOR_LOOP = 0.40, 8.0  # DESIGN §8 as revised: a floor that must not regress


def make_frame(n: int, seed: int = 7, offset: int = 0) -> pl.DataFrame:
    """A contacts-and-orders-like frame: unicode, quotes, commas, newlines, nulls, dates."""
    rng = np.random.default_rng(seed + offset)
    names = np.array(["Anna", "Ben", "Chloé", "Dmitri", "Zeynep", "O'Brien", "Søren", "李", 'Say "hi"', "a,b"])
    cities = np.array(["London", "Istanbul", "Berlin", "Paris", "Leeds\nNorth", "Izmir"])
    idx = np.arange(offset, offset + n)
    return pl.DataFrame(
        {
            "key": pl.Series(idx).cast(pl.String).str.zfill(9),
            "email": pl.select(pl.lit("user") + pl.Series(idx).cast(pl.String) + pl.lit("@example.com")).to_series(),
            "first_name": names[rng.integers(0, len(names), n)],
            "last_name": names[rng.integers(0, len(names), n)],
            "city": cities[rng.integers(0, len(cities), n)],
            "birthday": pl.Series(rng.integers(0, 20000, n)).cast(pl.Date),
            "vip": rng.random(n) < 0.1,
            "points": rng.integers(0, 100_000, n),
            "score": np.round(rng.random(n) * 100, 2),
            "company": pl.select(
                pl.when(pl.Series(rng.random(n) < 0.3)).then(None).otherwise(pl.lit("Acme Ltd"))
            ).to_series(),
            "updated_at": pl.Series(rng.integers(0, 10**15, n)).cast(pl.Datetime("us")),
        }
    )


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def consume(frame: pl.DataFrame, target: cf.Target) -> int:
    return sum(len(p.body) for p in frame.crm.payloads(target))


def json_loop(frame: pl.DataFrame) -> int:
    total = 0
    for row in frame.iter_rows(named=True):
        total += len(json.dumps(row, default=str))
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    df = make_frame(args.rows)
    dd = cf.Dotdigital()
    qx = cf.Qualtrics(datacenter="fra1")
    dn = cf.Dengage()
    cases = [
        ("dotdigital.contacts", df.drop("key"), dd.contacts(1), "csv"),
        ("dotdigital.transactional_data", df, dd.transactional_data("bench", key="key"), "ndjson"),
        ("dotdigital.insight_data", df, dd.insight_data("bench", scope="contact", type="custom", key="key"), "ndjson"),
        (
            "qualtrics.transaction_contacts",
            df,
            qx.transaction_contacts("POOL_b", "CG_b", transaction_fields=["key", "points"]),
            "ndjson",
        ),
        # the frame's columns, declared as the account's import-enabled set
        (
            "dengage.contacts",
            df.rename({"key": "contact_key"}),
            dn.contacts(columns=["contact_key", *df.columns[1:]]),
            "ndjson",
        ),
    ]
    writers = {"ndjson": lambda: df.write_ndjson(io.BytesIO()), "csv": lambda: df.write_csv(io.BytesIO())}
    loops = [best(lambda: json_loop(df), 1)]  # once before the targets and once after: the faster counts
    measured = []
    for name, frame, target, kind in cases:
        size = consume(frame, target)  # warm-up, and the output size
        ours, ref, planned = [], [], []
        for _ in range(args.repeat):
            ref.append(best(writers[kind], 1))
            ours.append(best(lambda frame=frame, target=target: consume(frame, target), 1))
            planned.append(best(lambda frame=frame, target=target: frame.crm.plan(target), 1))
        measured.append((name, kind, min(ours), min(ref), min(planned), size, frame.crm.plan(target).requests))
    loops.append(best(lambda: json_loop(df), 1))
    t_loop = min(loops)
    print(f"frame: {df.height:,} rows, {df.estimated_size() / 1e6:.0f} MB in memory; polars {pl.__version__}")
    print(
        f"per-row json.dumps loop {t_loop:.2f} s (faster of {loops[0]:.2f} s before and {loops[1]:.2f} s after). "
        f"Each target is timed alternately with its polars writer (best of {args.repeat} each), so both see "
        "the same load on this shared machine.\n"
    )
    print(
        f"{'target':<32}{'time':>7}{'writer':>8}{'MB out':>8}{'requests':>9}   "
        f"{'vs polars writer (≥0.40)':<26}{'vs json loop (≥8×)':<22}{'plan only, vs writer'}"
    )
    missed = 0
    for name, kind, t, t_ref, t_plan, size, requests in measured:
        r_writer, r_loop = t_ref / t, t_loop / t
        ok1, ok2 = r_writer >= FLOOR_WRITER, r_loop >= FLOOR_LOOP
        missed += (not ok1) + (not ok2)
        print(
            f"{name:<32}{t:>6.2f}s{t_ref:>7.2f}s{size / 1e6:>8.0f}{requests:>9}   "
            f"{r_writer:>5.2f} of write_{kind:<7} {'ok' if ok1 else 'MISSED':<7}"
            f"{r_loop:>6.1f}×  {'ok' if ok2 else 'MISSED':<13}{t_plan:>5.2f}s  {t_ref / t_plan:>5.2f}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
