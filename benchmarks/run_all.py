"""Every benchmark, one after the other; exits 0 exactly when every goal of DESIGN §8 (as
revised: send only what changed, slots, memory as an overhead bound, encoding as a floor)
is met.

    python benchmarks/run_all.py [--quick]

``--quick`` shrinks the inputs (100k rows, 3M-row streaming) for a smoke run; the
figures in benchmarks/README.md come from the full run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    quick = "--quick" in sys.argv
    runs = [
        ["bench_import.py"],
        ["bench_encode.py", *(["--rows", "100000"] if quick else [])],
        ["bench_memory.py", *(["--skip-10m"] if quick else [])],
        ["bench_engine.py"],
        ["bench_unchanged.py", *(["--rows", "100000"] if quick else [])],
    ]
    failed = []
    for args in runs:
        print(f"\n$ python benchmarks/{' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]]).returncode:
            failed.append(args[0])
    print("\nmissed goals in: " + (", ".join(failed) if failed else "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
