"""What ``import crmframes`` adds on top of ``import polars, httpx`` (DESIGN §8: < 0.15 s).

    python benchmarks/bench_import.py

Fresh interpreters, best of 7; also checks that the sandbox and widget stacks stay unloaded.
Exits 1 when the goal is missed.
"""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys, time
t0 = time.perf_counter()
import polars, httpx
t1 = time.perf_counter()
import crmframes
t2 = time.perf_counter()
heavy = sorted(m for m in ("starlette", "uvicorn", "ipywidgets", "tqdm") if m in sys.modules)
print(json.dumps({"base": t1 - t0, "extra": t2 - t1, "heavy": heavy}))
"""


def main() -> int:
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout)
        for _ in range(7)
    ]
    extra = min(r["extra"] for r in runs)
    base = min(r["base"] for r in runs)
    heavy = runs[0]["heavy"]
    ok = extra < 0.15 and not heavy
    print(
        f"import polars, httpx: {base:.3f} s; import crmframes adds {extra:.3f} s (goal < 0.150) "
        f"{'ok' if ok else 'MISSED'}; lazily kept out: starlette, uvicorn, ipywidgets, tqdm"
        + (f" — but loaded: {heavy}" if heavy else "")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
