"""The command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DATA


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmframes", *args], capture_output=True, text=True, timeout=120)


def test_demo_plans_all_five_targets_from_the_sample_files():
    out = run("demo")
    assert out.returncode == 0, out.stderr
    for name in ("dotdigital.contacts", "dotdigital.transactional_data", "dotdigital.insight_data",
                 "qualtrics.transaction_contacts", "dengage.contacts"):
        assert f"=== {name}" in out.stdout
    assert out.stdout.count("invalid_email") >= 2


def test_plan_reads_a_file_lazily_and_prints_the_requests():
    out = run("plan", str(DATA / "dengage_contacts.csv"), "--to", "dengage.contacts")
    assert out.returncode == 0, out.stderr
    assert "requests       1" in out.stdout and "contact_status" in out.stdout


def test_validate_exits_1_when_rows_have_problems():
    out = run("validate", str(DATA / "contacts.csv"), "--to", "dotdigital.contacts", "-o", "address_book_id=5")
    assert out.returncode == 1 and "invalid_email" in out.stdout


def test_bad_option_exits_2_with_the_allowed_values_and_no_traceback():
    out = run("plan", str(DATA / "contacts.csv"), "--to", "dotdigital.contacts", "-o", "address_book_id=5",
              "-o", "merge_option=7")
    assert out.returncode == 2
    assert "merge_option must be one of" in out.stderr and "Traceback" not in out.stderr


def test_sandbox_command_serves_on_the_given_port_with_its_knobs():
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "crmframes", "sandbox", "--port", str(port), "--job-duration", "2",
                             "--time-scale", "0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
