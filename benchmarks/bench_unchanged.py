"""Send only what changed (DESIGN §8, §10): a daily re-run of a 1M-row frame with 1 % of its
rows changed, against the sandbox, with the baseline the first run recorded.

    python benchmarks/bench_unchanged.py [--rows N]

Prints, measured in one run:
- rows sent by the re-run (goal: exactly the changed rows) and by a third run (goal: none);
- planning with the baseline vs without (goal ≤ 1.5×), alternately, best of 3 each;
- the baseline's bytes per key on disk (goal ≤ 24).
Exits 1 when a goal is missed. The target is Dotdigital Insight data (account scope), so
the sandbox needs no contacts; the frame is bench_encode's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    os.environ["CRMFRAMES_HOME"] = tempfile.mkdtemp(prefix="crmframes-bench-")
    import polars as pl
    from bench_encode import best, make_frame

    import crmframes as cf
    from crmframes import _baseline

    frame = make_frame(args.rows)
    step = 100  # every 100th row changes: 1 %
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) % step == 0)
        .then(pl.col("points") + 1)
        .otherwise(pl.col("points"))
        .alias("points")
    )
    expected = (args.rows + step - 1) // step
    with cf.sandbox(job_duration=0.05, time_scale=0.0001) as sb:
        t = sb.dotdigital().insight_data("bench", scope="account", type="custom", key="key")
        t0 = time.perf_counter()
        first = frame.crm.submit(t, skip_unchanged=True, progress=False)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = changed.crm.submit(t, skip_unchanged=True, progress=False)
        t_second = time.perf_counter() - t0
        third = changed.crm.submit(t, skip_unchanged=True, progress=False)
        with_baseline, without = [], []
        for _ in range(3):  # alternately, so both see the same load on a shared machine
            without.append(best(lambda: changed.crm.plan(t), 1))
            with_baseline.append(best(lambda: changed.crm.plan(t, skip_unchanged=True), 1))
        per_key = _baseline.bytes_per_key(t)
        keys = cf.baseline(t).height
    sent2 = int(second.status()["rows"].sum() or 0)
    sent3 = int(third.status()["rows"].sum() or 0)
    ratio = min(with_baseline) / min(without)
    checks = [
        ("rows sent by the re-run", f"{sent2:,} of {args.rows:,} ({expected:,} changed)", sent2 == expected),
        ("rows sent by a third run", f"{sent3:,}", sent3 == 0),
        (
            "planning with the baseline vs without",
            f"{ratio:.2f}× ({min(with_baseline):.2f} s vs {min(without):.2f} s)",
            ratio <= 1.5,
        ),
        ("baseline on disk", f"{per_key:.1f} bytes per key ({keys:,} keys)", per_key <= 24),
    ]
    print(
        f"frame: {args.rows:,} rows, {frame.estimated_size() / 1e6:.0f} MB; first run sent "
        f"{int(first.status()['rows'].sum() or 0):,} rows in {t_first:.1f} s, the re-run {sent2:,} in {t_second:.1f} s "
        f"({second.counts().get('unchanged', 0):,} unchanged); polars {pl.__version__}"
    )
    missed = 0
    for what, measured, ok in checks:
        missed += not ok
        print(f"  {what:<40}{measured:<40}{'ok' if ok else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
