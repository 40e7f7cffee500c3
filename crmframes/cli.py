"""Command line: ``crmframes plan|validate|submit FILE --to TARGET -o key=value ...``, ``demo``, ``sandbox``.

Credentials and regions come from the same environment variables as the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import polars as pl

from crmframes._connection import connection_class
from crmframes._errors import ConfigError, CrmError
from crmframes._pipeline import plan as plan_frame
from crmframes._report import OUTCOMES
from crmframes._target import Target, registered, target_class


def _list_options(cls: type[Target]) -> set[str]:
    """The target's options that take column lists (typed ``tuple[str, ...]``): ``a,b,c``."""
    return {f.name for f in dataclasses.fields(cls) if "tuple[" in str(f.type)}  # type: ignore[arg-type]


def _value(key: str, raw: str, lists: set[str]) -> Any:
    if key in lists:
        return [v for v in raw.split(",") if v]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


def _connection(vendor: str, sandbox_url: str | None = None) -> Any:
    cls = connection_class(vendor)
    if sandbox_url is not None:
        from crmframes.sandbox import CREDS

        return cls(*CREDS[vendor], base_url=sandbox_url)  # type: ignore[call-arg]
    return cls.from_environment()


def build_target(name: str, options: list[str], sandbox_url: str | None = None) -> Target:
    lists = _list_options(target_class(name))
    kwargs = {}
    for opt in options:
        key, sep, raw = opt.partition("=")
        if not sep:
            raise ConfigError(f"options are key=value; got {opt!r}")
        kwargs[key.strip()] = _value(key.strip(), raw, lists)
    return _build(name, kwargs, sandbox_url)


def _build(name: str, options: dict[str, Any], sandbox_url: str | None = None) -> Target:
    cls = target_class(name)  # unknown names fail with the known ones and a suggestion
    try:
        return cls.build(_connection(cls.vendor_and_method()[0], sandbox_url), **options)
    except TypeError as e:
        raise ConfigError(f"{name}: {e}") from e


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
    p = plan_frame(read_frame(args.file), t, skip_unchanged=args.skip_unchanged)
    print(p)
    if p.problems.height:
        print("\nproblems:")
        _print_problems(p.problems)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from crmframes._account import validate as validate_frame

    problems = validate_frame(read_frame(args.file), build_target(args.to, args.option), account=args.account)
    _print_problems(problems)
    return 1 if problems.height else 0


KNOBS = ("latency", "job_duration", "time_scale", "p429", "p5xx", "p_drop", "p_job_fail", "seed")


def _knobs(args: argparse.Namespace) -> dict[str, Any]:
    knobs = {k: getattr(args, k) for k in KNOBS if getattr(args, k, None) is not None}
    if getattr(args, "variant", None):
        knobs["variants"] = args.variant
    mix: dict[str, dict[str, float]] = {}
    for item in getattr(args, "status", None) or []:
        endpoint, sep, word = item.partition("=")
        if not sep or not word:
            raise ConfigError(f"--status takes ENDPOINT=WORD (e.g. contacts=RejectedByWatchdog); got {item!r}")
        mix.setdefault(endpoint.strip(), {})[word.strip()] = 1.0
    if mix:
        knobs["status_mix"] = mix
    return knobs


def _progress(event: Any) -> None:
    """One line per state change: plain text that reads the same in a terminal, a log or CI."""
    from crmframes import _events as ev

    if isinstance(event, ev.Submitted):
        print(f"  partition {event.partition}: submitted" + (f" (import {event.import_id})" if event.import_id else ""))
    elif isinstance(event, ev.Settled):
        print(f"  partition {event.partition}: {event.state}" + (f" — {event.message}" if event.message else ""))
    elif isinstance(event, ev.RetryScheduled):
        print(f"  {event.call}: {event.why} (HTTP {event.status}), retrying in {event.wait:.2f} s")


def _summary(job: Any) -> None:
    with pl.Config(tbl_rows=12, fmt_str_lengths=60, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        print(
            job.status().select(
                "partition",
                "import_id",
                "state",
                "vendor_state",
                "rows",
                "bytes",
                "retries",
                "vendor_imported",
                "vendor_rejected",
                "reconciled",
            )
        )
        report = job.report()
        print("report (one row per input row) — outcomes:", ", ".join(f"{k} {v}" for k, v in job.counts().items()))
        not_ok = report.filter(pl.col("outcome") != "accepted")
        if not_ok.height:
            print(not_ok.head(8))


def cmd_submit(args: argparse.Namespace) -> int:
    import contextlib

    from crmframes._job import submit

    with contextlib.ExitStack() as stack:
        url = None
        if args.sandbox:
            from crmframes.sandbox import sandbox

            url = stack.enter_context(sandbox(**_knobs(args))).url
        t = build_target(args.to, args.option, url)
        job = submit(
            read_frame(args.file),
            t,
            sinks=[_progress] if not args.quiet else (),
            progress=False,
            check_account=not args.no_check_account,
            skip_unchanged=args.skip_unchanged,
        )
    _summary(job)
    if args.report:
        out = Path(args.report)
        report = job.report().with_columns(pl.col("outcome").cast(pl.String))
        report.write_parquet(out) if out.suffix == ".parquet" else report.write_csv(out)
        print(f"report written to {out}")
    return 0 if set(job.counts()) <= {"accepted"} else 1


def cmd_baseline(args: argparse.Namespace) -> int:
    from crmframes._job import baseline

    t = build_target(args.to, args.option)
    if args.reset:
        forgot = baseline(t).height
        baseline(t, reset=True)
        print(f"forgot the baseline of {t.name} ({forgot:,} keys): the next --skip-unchanged run sends every row")
        return 0
    frame = baseline(t)
    print(f"{t.name}: the vendor is known to hold {frame.height:,} keys")
    if frame.height:
        with pl.Config(tbl_rows=10, tbl_hide_dataframe_shape=True):
            print(frame.group_by("job_id", "written_at").len().sort("written_at"))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from crmframes._job import jobs

    before = len(jobs()) if args.older_than else 0
    frame = jobs(prune_older_than=args.older_than)
    if args.older_than:
        print(f"pruned {before - frame.height} job(s) last updated more than {args.older_than} ago, with their lineage")
    with pl.Config(tbl_rows=50, tbl_width_chars=200, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
        print(frame.drop("updated_at") if frame.height else "no jobs in the journal")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from crmframes._job import resume

    frame = read_frame(args.file) if args.file else None
    job = resume(args.job, frame, resend_in_doubt=args.resend_in_doubt, sinks=[_progress], progress=False)
    _summary(job)
    return 0 if set(job.counts()) <= {"accepted"} else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole round trip against the embedded sandbox, with the sample files shipped in the package."""
    import time

    from crmframes import samples
    from crmframes._job import Job
    from crmframes.sandbox import sandbox

    knobs = {"job_duration": 1.0, "time_scale": 0.01, **_knobs(args)}
    rows = []
    # the sandbox account has Dotdigital's default data fields plus the ones contacts.csv uses
    with sandbox(**knobs, data_fields=samples.FIELDS) as sb:
        print(
            f"embedded sandbox at {sb.url} with {knobs} (a minute of vendor time takes "
            f"{60 * knobs['time_scale']:.1f} s)"
        )
        # every registered target's example, by name: dotdigital.contacts comes before the
        # other Dotdigital targets, which need its contacts
        for name, cls in registered().items():
            if cls.example is None:
                continue
            file = cls.example.file
            print(f"\n=== {name}  ←  {file} (crmframes.samples)")
            t = _build(name, dict(cls.example.options), sb.url)
            started = time.monotonic()
            job = Job(read_frame(str(samples.path(file))), t, sinks=[_progress], progress=False)
            print(job.plan)
            job.wait()
            _summary(job)
            counts = job.counts()
            rows.append(
                {
                    "target": name,
                    "file": file,
                    "partitions": job.status().height,
                    **{o: counts.get(o, 0) for o in OUTCOMES if o in counts or o in ("accepted", "rejected")},
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
        stored = sb.state()
    print("\n=== summary (outcomes per input row)")
    with pl.Config(tbl_width_chars=160, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        summary = pl.DataFrame(rows).fill_null(0)
        order = ["target", "file", "partitions", *(o for o in OUTCOMES if o in summary.columns), "seconds"]
        print(summary.select(order))
    from crmframes.sandbox._app import VENDORS

    print("sandbox now holds: " + ", ".join(v.holds(stored[v.KEY]) for v in VENDORS))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from crmframes.sandbox import CREDS, Sandbox, _quiet_dropped_answers

    try:
        app = Sandbox(**_knobs(args))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    _quiet_dropped_answers()
    print(
        f"crmframes sandbox on http://127.0.0.1:{args.port} (Ctrl-C stops it); any non-empty "
        f"credentials work, e.g. Dotdigital {CREDS['dotdigital'][0]!r}. State: GET /_sandbox/state"
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
    return 0


def _knob_flags(sp: argparse.ArgumentParser) -> None:
    for knob, kind in (
        ("latency", float),
        ("job-duration", float),
        ("time-scale", float),
        ("p429", float),
        ("p5xx", float),
        ("p-drop", float),
        ("p-job-fail", float),
        ("seed", int),
    ):
        sp.add_argument(
            f"--{knob}",
            type=kind,
            default=None,
            dest=knob.replace("-", "_"),
            help="sandbox knob" if knob != "time-scale" else "multiplies vendor intervals",
        )
    sp.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="an answer variant real services show (crmframes.sandbox.VARIANTS), repeatable",
    )
    sp.add_argument(
        "--status",
        action="append",
        metavar="ENDPOINT=WORD",
        help="end imports of an endpoint (e.g. contacts, transactional, insight, qualtrics) with this "
        "status word, e.g. contacts=RejectedByWatchdog; repeat to mix words evenly",
    )


def _target_flags(sp: argparse.ArgumentParser) -> None:
    """``--to TARGET`` and its ``-o key=value`` options."""
    names = sorted(registered())
    sp.add_argument("--to", required=True, choices=names, metavar="TARGET", help="one of: " + ", ".join(names))
    sp.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="target option, e.g. -o address_book_id=123 -o fields=a,b",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crmframes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("plan", cmd_plan, "show the requests a file would become"),
        ("validate", cmd_validate, "list the problems of a file (exit 1 if any)"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("file", help=".csv, .parquet or .ndjson (read lazily)")
        _target_flags(sp)
        if name == "plan":
            sp.add_argument(
                "--skip-unchanged",
                action="store_true",
                help="leave out rows identical to what the vendor last accepted",
            )
        if name == "validate":
            sp.add_argument(
                "--account",
                action="store_true",
                help="also ask the account: the destination exists, credentials work, every column "
                "lands in a field of the right type (a few GETs)",
            )
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("submit", help="send a file to a target and print status and report")
    sp.add_argument("file", help=".csv, .parquet or .ndjson (read lazily)")
    _target_flags(sp)
    sp.add_argument("--sandbox", action="store_true", help="send to the embedded sandbox, not the vendor")
    sp.add_argument("--report", metavar="PATH", help="write the report (.csv or .parquet)")
    sp.add_argument(
        "--no-check-account", action="store_true", help="send without asking the account first (destination, fields)"
    )
    sp.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="send only rows new or changed since the vendor last accepted them",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _knob_flags(sp)
    sp.set_defaults(fn=cmd_submit)
    sp = sub.add_parser("baseline", help="what the vendor is known to hold for a destination (skip_unchanged)")
    _target_flags(sp)
    sp.add_argument("--reset", action="store_true", help="forget it: the next skip-unchanged run sends every row")
    sp.set_defaults(fn=cmd_baseline)
    sp = sub.add_parser("jobs", help="list the journalled jobs")
    sp.add_argument(
        "--older-than",
        metavar="AGE",
        help="first remove the jobs last updated more than AGE ago "
        "(e.g. 30d, 12h, or a date 2026-11-01), with their lineage",
    )
    sp.set_defaults(fn=cmd_jobs)
    sp = sub.add_parser("resume", help="finish a journalled job (credentials from the environment)")
    sp.add_argument("job", help="the job id (crmframes jobs)")
    sp.add_argument("file", nargs="?", help="the same input file, needed if some partitions were not sent")
    sp.add_argument(
        "--resend-in-doubt",
        action="store_true",
        help="also re-send partitions whose answer was lost where that may duplicate data",
    )
    sp.set_defaults(fn=cmd_resume)
    sp = sub.add_parser("demo", help="the whole round trip against the embedded sandbox, with the sample files")
    _knob_flags(sp)
    sp.set_defaults(fn=cmd_demo)
    sp = sub.add_parser("sandbox", help="serve the vendor sandbox on 127.0.0.1")
    sp.add_argument("--port", type=int, default=8765)
    _knob_flags(sp)
    sp.set_defaults(fn=cmd_sandbox)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except CrmError as e:
        print(f"crmframes: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
