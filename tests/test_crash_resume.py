"""Kill -9 a process in the middle of a job; ``cf.resume`` finishes it; nothing lost or doubled.

A child process runs a multi-partition job against a sandbox that this test serves (so the
sandbox outlives the child). A sink freezes the child's engine right after the journal has
recorded a chosen event, the test SIGKILLs it there, then resumes the job from the journal
and checks the sandbox: every accepted row written exactly once (Qualtrics: one
transaction per row, never two).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

import crmframes as cf
from tests.conftest import DATA, sample, sandbox

CHILD = r"""
import os, sys, time
import polars as pl
import crmframes as cf
from crmframes import _events as ev

url, kind, point = sys.argv[1:4]
skip = sys.argv[4:] == ["skip"]  # skip_unchanged
if kind == "contacts":
    frame = pl.read_csv({contacts!r})
    t = cf.Dotdigital("u", "p", base_url=url).contacts(77).with_limits(max_bytes=4000, max_concurrent=1)
elif kind == "qualtrics":
    frame = pl.read_csv({survey!r})
    t = cf.Qualtrics("tok", base_url=url).transaction_contacts(
        "POOL_demo", "CG_crash", transaction_fields=["order_id", "amount"]).with_limits(max_records=40)
else:
    frame = pl.read_csv({dengage!r}).with_columns(pl.col("birth_date").cast(pl.String))
    t = cf.Dengage("k", "p", base_url=url).contacts().with_limits(max_records=50)
state = {{"settled": 0, "submitted": 0}}

def freeze(e):
    if isinstance(e, ev.Settled):
        state["settled"] += 1
    if isinstance(e, ev.Submitted):
        state["submitted"] += 1
    # between submits: the second import is with the vendor and nothing else is on the wire
    # (one import at a time); D·engage answers synchronously, so: after its second answer
    hit = ((point == "before_submit" and isinstance(e, ev.Planned))
           or (point == "between_submits" and isinstance(e, ev.Submitted) and state["submitted"] == 2)
           or (point == "between_submits" and kind == "dengage" and isinstance(e, ev.Settled) and state["settled"] == 2)
           or (point == "while_polling" and isinstance(e, ev.Polled) and state["settled"] == 1)
           # halfway: the first import settled (its rows confirmed) and the second is with the
           # vendor; the slot is freed when the vendor ends an import, before its report is
           # read, so the second submit can come before or after the first settles
           or (point == "halfway" and isinstance(e, (ev.Submitted, ev.Settled))
               and state["settled"] == 1 and state["submitted"] == 2)
           or (point == "mid_send" and isinstance(e, ev.Sending) and state["settled"] == 1))
    if hit:
        print("FROZEN", e.job_id, flush=True)
        time.sleep(600)

job = cf.Job(frame, t, sinks=[freeze], skip_unchanged=skip)
job.wait()
print("FINISHED", flush=True)
"""

CASES = [
    ("contacts", "before_submit"),
    ("contacts", "between_submits"),
    ("contacts", "while_polling"),
    ("contacts", "mid_send"),
    ("qualtrics", "before_submit"),
    ("qualtrics", "between_submits"),
    ("qualtrics", "while_polling"),
    ("qualtrics", "mid_send"),
    ("dengage", "between_submits"),
    ("dengage", "mid_send"),
]


def frame_for(kind: str) -> pl.DataFrame:
    if kind == "contacts":
        return pl.read_csv(DATA / "contacts.csv")
    if kind == "qualtrics":
        return pl.read_csv(DATA / "survey_transactions.csv")
    return pl.read_csv(DATA / "dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))


def connection_for(kind: str, url: str):
    return {
        "contacts": cf.Dotdigital("u", "p", base_url=url),
        "qualtrics": cf.Qualtrics("tok", base_url=url),
        "dengage": cf.Dengage("k", "p", base_url=url),
    }[kind]


def run_child_until_frozen(url: str, kind: str, point: str, home: Path, *extra: str) -> str:
    code = CHILD.format(
        contacts=str(DATA / "contacts.csv"),
        survey=str(DATA / "survey_transactions.csv"),
        dengage=str(DATA / "dengage_contacts.csv"),
    )
    env = {**os.environ, "CRMFRAMES_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, url, kind, point, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FROZEN"), f"child did not freeze: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        job_id = line.split()[1]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return job_id
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(("kind", "point"), CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_sigkill_then_resume_writes_every_accepted_row_exactly_once(kind, point, tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job_id = run_child_until_frozen(sb.url, kind, point, tmp_path)
        listed = cf.jobs()
        assert listed["job_id"].to_list() == [job_id] and listed["state"].item() != "done"
        time.sleep(0.4)  # imports the child submitted finish at the vendor meanwhile
        frame = frame_for(kind)
        job = cf.resume(job_id, frame, connection=connection_for(kind, sb.url))
        if kind == "qualtrics" and point == "mid_send":
            # the request never left (frozen before the call), but the journal cannot know:
            # a Qualtrics partition in doubt is reported, not re-sent ...
            doubtful = job.status().filter(pl.col("state") == "in_doubt")
            assert doubtful.height == 1 and job.counts()["in_doubt"] == doubtful["rows"].item()
            job = job.resend()  # ... until the user, having checked, asks for it
        state = sb.state(settled=True)
    report = job.report()
    assert job.done and report.height == frame.height and sum(job.counts().values()) == frame.height
    accepted = report.filter(pl.col("outcome") == "accepted")["row"]
    if kind == "contacts":
        stored = state["dotdigital"]["address_books"]["77"]
        keys = frame["email"].str.to_lowercase().gather(accepted)
    elif kind == "qualtrics":
        (stored,) = state["qualtrics"]["batches"].values()  # the child's batch, reused on resume
        assert sum(stored.values()) == len(accepted), "one transaction per accepted row, never two"
        keys = frame["email"].str.to_lowercase().gather(accepted)
    else:
        stored = state["dengage"]["contacts"]
        keys = frame["contact_key"].cast(pl.String).gather(accepted)
    assert set(stored) == set(keys)
    if kind != "qualtrics":
        assert set(stored.values()) == {1}, "every accepted row written exactly once"
    assert job.counts().get("accepted") == frame.height - report.filter(pl.col("outcome") != "accepted").height


def test_resume_without_the_frame_finishes_what_was_submitted_and_says_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job_id = run_child_until_frozen(sb.url, "contacts", "while_polling", tmp_path)
        conn = connection_for("contacts", sb.url)
        with pytest.raises(cf.FrameError, match=r"not sent yet .* cf\.resume\("):
            cf.resume(job_id, connection=conn)
        job = cf.Job.restore(job_id, connection=conn)
        assert job.state.partitions[1].state == "submitted" and job.state.partitions[1].import_id


def test_resume_refuses_a_frame_that_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job_id = run_child_until_frozen(sb.url, "contacts", "between_submits", tmp_path)
        changed = frame_for("contacts").with_columns(pl.col("FIRSTNAME").str.to_uppercase())
        with pytest.raises(cf.FrameError, match="the frame changed"):
            cf.resume(job_id, changed, connection=connection_for("contacts", sb.url))


def test_a_finished_job_reports_from_the_journal_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path))
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.1, time_scale=0.001) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(5).with_limits(max_bytes=6000))
    again = cf.resume(job.id)  # the sandbox is gone: everything comes from the journal
    assert again.done and again.report().equals(job.report())
    assert again.status().drop("submitted_at", "finished_at").equals(job.status().drop("submitted_at", "finished_at"))
