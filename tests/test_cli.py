"""The command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DATA


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmframes", *args], capture_output=True, text=True, timeout=120)


def test_demo_runs_the_round_trip_for_all_five_targets_against_the_embedded_sandbox():
    out = run("demo")
    assert out.returncode == 0, out.stderr
    for name in (
        "dotdigital.contacts",
        "dotdigital.transactional_data",
        "dotdigital.insight_data",
        "qualtrics.transaction_contacts",
        "dengage.contacts",
    ):
        assert f"=== {name}" in out.stdout
    assert out.stdout.count("invalid_email") >= 2
    # the vendor's own reasons come back, and the sandbox holds what was accepted
    assert "Globally Suppressed" in out.stdout and "ContactEmailDoesNotExist" in out.stdout
    assert (  # vendors in the order the sandbox finds their modules
        "sandbox now holds: 196 D·engage contacts, 196 Dotdigital contacts, 592 collection records, "
        "118 Qualtrics contacts"
    ) in out.stdout


def test_submit_sends_a_file_to_the_sandbox_and_writes_the_report(tmp_path):
    report = tmp_path / "report.csv"
    out = run(
        "submit",
        str(DATA / "orders.parquet"),
        "--to",
        "dotdigital.insight_data",
        "--sandbox",
        "--time-scale",
        "0.001",
        "--job-duration",
        "0.1",
        "-o",
        "collection=orders",
        "-o",
        "scope=contact",
        "-o",
        "type=orders",
        "-o",
        "key=order_id",
        "--report",
        str(report),
    )
    # the sandbox knows no contacts yet: every valid order is rejected, so the exit code is 1
    assert out.returncode == 1, out.stderr
    import polars as pl

    rep = pl.read_csv(report)
    assert rep.height == 300 and set(rep["outcome"]) == {"invalid", "rejected"}
    assert "ContactEmailDoesNotExist" in out.stdout and "partition 0: finished" in out.stdout


def test_submit_without_credentials_says_which_variables_to_set():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DENGAGE_")}
    out = subprocess.run(
        [sys.executable, "-m", "crmframes", "submit", str(DATA / "dengage_contacts.csv"), "--to", "dengage.contacts"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2 and "DENGAGE_USER_KEY" in out.stderr and "Traceback" not in out.stderr


def test_plan_reads_a_file_lazily_and_prints_the_requests():
    out = run("plan", str(DATA / "dengage_contacts.csv"), "--to", "dengage.contacts")
    assert out.returncode == 0, out.stderr
    assert "requests       1" in out.stdout and "contact_status" in out.stdout


def test_validate_exits_1_when_rows_have_problems():
    out = run("validate", str(DATA / "contacts.csv"), "--to", "dotdigital.contacts", "-o", "address_book_id=5")
    assert out.returncode == 1 and "invalid_email" in out.stdout


def test_bad_option_exits_2_with_the_allowed_values_and_no_traceback():
    out = run(
        "plan",
        str(DATA / "contacts.csv"),
        "--to",
        "dotdigital.contacts",
        "-o",
        "address_book_id=5",
        "-o",
        "merge_option=7",
    )
    assert out.returncode == 2
    assert "merge_option must be one of" in out.stderr and "Traceback" not in out.stderr


def test_sandbox_command_serves_on_the_given_port_with_its_knobs():
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmframes",
            "sandbox",
            "--port",
            str(port),
            "--job-duration",
            "2",
            "--time-scale",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                knobs = httpx.get(f"http://127.0.0.1:{port}/_sandbox/config", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert knobs["job_duration"] == 2.0 and knobs["time_scale"] == 0.01
        assert httpx.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=5).json()["dengage"] == {"contacts": {}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
