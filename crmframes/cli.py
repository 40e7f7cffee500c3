"""Command line: ``crmframes plan|validate FILE --to TARGET -o key=value ...`` and ``demo``.

Credentials and regions come from the same environment variables as the Python API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import polars as pl

from crmframes._errors import ConfigError, CrmError
from crmframes._pipeline import plan as plan_frame
from crmframes._pipeline import validate as validate_frame
from crmframes._target import Target, registered, target_class

# target name → (connection factory, method name)
FACTORIES: dict[str, tuple[str, str]] = {
    "dotdigital.contacts": ("dotdigital", "contacts"),
    "dotdigital.transactional_data": ("dotdigital", "transactional_data"),
    "dotdigital.insight_data": ("dotdigital", "insight_data"),
    "qualtrics.transaction_contacts": ("qualtrics", "transaction_contacts"),
    "dengage.contacts": ("dengage", "contacts"),
}
LIST_OPTIONS = {"fields", "transaction_fields", "embedded_fields", "columns"}
DATA = Path(__file__).resolve().parent.parent / "data"


def _value(key: str, raw: str) -> Any:
    if key in LIST_OPTIONS:
        return [v for v in raw.split(",") if v]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


def _connection(vendor: str) -> Any:
    import os

    from crmframes.vendors.dengage import Dengage
    from crmframes.vendors.dotdigital import Dotdigital
    from crmframes.vendors.qualtrics import Qualtrics

    if vendor == "dotdigital":
        return Dotdigital()
    if vendor == "qualtrics":
        # planning needs no host; a datacenter is only needed to send
        return Qualtrics(datacenter=os.environ.get("QUALTRICS_DATACENTER") or "fra1")
    return Dengage()


def build_target(name: str, options: list[str]) -> Target:
    target_class(name)  # unknown names fail with the known ones and a suggestion
    vendor, method = FACTORIES[name]
    kwargs = {}
    for opt in options:
        key, sep, raw = opt.partition("=")
        if not sep:
            raise ConfigError(f"options are key=value; got {opt!r}")
        kwargs[key.strip()] = _value(key.strip(), raw)
    try:
        return getattr(_connection(vendor), method)(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{name}: {e}") from None


def read_frame(path: str) -> pl.LazyFrame:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such file: {path}")
    if p.suffix == ".parquet":
        return pl.scan_parquet(p)
    if p.suffix in (".csv", ".txt"):
        return pl.scan_csv(p, try_parse_dates=True)
    if p.suffix in (".ndjson", ".jsonl"):
        return pl.scan_ndjson(p)
    raise ConfigError(f"{path}: use a .csv, .parquet or .ndjson file")


def _print_problems(problems: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=20, fmt_str_lengths=100, tbl_width_chars=160):
        print(problems if problems.height else "no problems")


def cmd_plan(args: argparse.Namespace) -> int:
    t = build_target(args.to, args.option)
    p = plan_frame(read_frame(args.file), t)
    print(p)
    if p.problems.height:
        print("\nproblems:")
        _print_problems(p.problems)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_frame(read_frame(args.file), build_target(args.to, args.option))
    _print_problems(problems)
    return 1 if problems.height else 0


DEMO = [
    ("contacts.csv", "dotdigital.contacts", ["address_book_id=1001", "merge_option=OnlyOverwriteIfNotEmpty"]),
    ("orders.parquet", "dotdigital.transactional_data", ["collection=orders", "key=order_id", "contact=email"]),
    ("orders.parquet", "dotdigital.insight_data",
     ["collection=orders", "scope=contact", "type=orders", "key=order_id", "identity=email"]),
    ("survey_transactions.csv", "qualtrics.transaction_contacts",
     ["directory_id=POOL_demo", "mailing_list_id=CG_demo", "transaction_fields=order_id,amount,visit_date"]),
    ("dengage_contacts.csv", "dengage.contacts", ["insert_if_not_exists=true"]),
]


def cmd_demo(args: argparse.Namespace) -> int:
    for file, name, options in DEMO:
        print(f"\n=== {name}  ←  data/{file}")
        t = build_target(name, options)
        p = plan_frame(read_frame(str(DATA / file)), t)
        print(p)
        print("problems (these rows are reported invalid and not sent):")
        _print_problems(p.problems.select("row", "column", "code"))
    print("\nSending to the embedded sandbox needs the engine, which is not built yet; "
          "this demo stops at the plan.")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from crmframes.sandbox import CREDS, Sandbox

    knobs = {k: getattr(args, k) for k in ("latency", "job_duration", "time_scale", "p429", "p5xx", "p_drop",
                                           "p_job_fail", "seed") if getattr(args, k) is not None}
    app = Sandbox(**knobs)
    print(f"crmframes sandbox on http://127.0.0.1:{args.port} (Ctrl-C stops it); any non-empty "
          f"credentials work, e.g. Dotdigital {CREDS['dotdigital'][0]!r}. State: GET /_sandbox/state")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crmframes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (("plan", cmd_plan, "show the requests a file would become"),
                           ("validate", cmd_validate, "list the problems of a file (exit 1 if any)")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("file", help=".csv, .parquet or .ndjson (read lazily)")
        sp.add_argument("--to", required=True, choices=sorted(registered()), metavar="TARGET",
                        help="one of: " + ", ".join(sorted(registered())))
        sp.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="target option, e.g. -o address_book_id=123 -o fields=a,b")
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("demo", help="plan the sample files in data/ for all five targets")
    sp.set_defaults(fn=cmd_demo)
    sp = sub.add_parser("sandbox", help="serve the vendor sandbox on 127.0.0.1")
    sp.add_argument("--port", type=int, default=8765)
    for knob, kind in (("latency", float), ("job-duration", float), ("time-scale", float), ("p429", float),
                       ("p5xx", float), ("p-drop", float), ("p-job-fail", float), ("seed", int)):
        sp.add_argument(f"--{knob}", type=kind, default=None, dest=knob.replace("-", "_"))
    sp.set_defaults(fn=cmd_sandbox)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except CrmError as e:
        print(f"crmframes: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
