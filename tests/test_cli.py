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
