"""The accumulator and the displays, driven by recorded event sequences."""

from __future__ import annotations

import polars as pl

import crmframes as cf
from crmframes import _events as ev
from crmframes._display import render, sinks
from crmframes._display.terminal import TqdmSink
from tests.conftest import sample, sandbox

J = "job1"


def recorded() -> list[ev.Event]:
    """A job of three partitions: one done with 2 faults, one retried and still processing, one waiting."""
    faults = pl.DataFrame(
        {"row": [3, 4], "reason": ["Unsubscribed", "Invalid Email"], "detail": [None, None]},
        schema={"row": pl.Int64, "reason": pl.String, "detail": pl.String},
    )
    return [
        ev.Planned(J, 0.0, "dotdigital.contacts", ((0, 100, 5000), (1, 100, 5000), (2, 50, 2500)), 255, 5),
        ev.Sending(J, 1.0, 0),
        ev.Submitted(J, 1.5, 0, "imp-0", "NotFinished"),
        ev.Sending(J, 1.6, 1),
        ev.RetryScheduled(J, 1.7, 1, "submit", "rate_limited", 2.0, 429),
        ev.Submitted(J, 4.0, 1, "imp-1", "NotFinished"),
        ev.Polled(J, 6.0, 0, "Finished"),
        ev.Settled(J, 7.0, 0, ev.FINISHED, "Finished", faults=faults, imported=98, rejected=None),
    ]


def state_after(events: list[ev.Event]) -> ev.JobState:
    st = ev.JobState(J)
    for e in events:
        st.apply(e)
    return st


def test_the_accumulator_turns_a_recorded_sequence_into_the_state_status_shows():
    st = state_after(recorded())
    p = st.snapshot(now=11.5)
    assert (p.partitions, p.partitions_sent, p.partitions_settled) == (3, 2, 1)
    assert (p.rows_total, p.rows_sent, p.rows_settled, p.rows_rejected) == (250, 200, 100, 2)
    assert (p.bytes_total, p.bytes_sent, p.retries) == (12_500, 10_000, 1)
    assert p.stages[ev.PLANNED] == 1 and p.stages[ev.SUBMITTED] == 1 and p.stages[ev.FINISHED] == 1
    assert p.eta == (11.5 - 1.5) / 1 * 2  # elapsed per settled partition × partitions left
    status = cf._report.status(st)
    assert status["state"].to_list() == ["finished", "submitted", "planned"]
    assert status["retries"].to_list() == [0, 1, 0] and status["rejected_rows"].to_list() == [2, None, None]


def test_the_rendered_summary_says_where_the_job_is_and_how_it_ended():
    events = recorded()
    line = render.summary(state_after(events).snapshot(now=11.5))
    assert line.startswith("dotdigital.contacts: running")
    assert "partitions 1/3 settled (waiting 1, processing 1, done 1)" in line
    assert "rows 100/250, 5 invalid" in line and "2 rejected by the vendor" in line and "ETA 20 s" in line
    events += [
        ev.Settled(J, 9.0, 1, ev.FINISHED, "Finished"),
        ev.Settled(J, 9.5, 2, ev.NOT_SENT, message="cancelled before sending", reason="cancelled"),
        ev.Stopped(J, 9.6, "done"),
    ]
    done = state_after(events).snapshot(now=12.0)
    line = render.summary(done)
    assert line.startswith("dotdigital.contacts: done") and "(done 2, not sent 1)" in line and "ETA" not in line
    html = render.panel(done, {"accepted": 198, "rejected": 2, "invalid": 5, "not_sent": 50})
    assert "accepted 198, rejected 2, invalid 5, not_sent 50" in html and "imp-1" in html


def test_a_retry_wait_shows_while_it_lasts():
    st = state_after(recorded()[:5])
    assert "waiting: rate_limited 2.0 s" in render.summary(st.snapshot(now=2.0))


def test_progress_false_and_the_environment_switch_show_nothing(monkeypatch):
    assert sinks(False, None) == []
    monkeypatch.setenv("CRMFRAMES_PROGRESS", "0")
    assert sinks(None, None) == [] and sinks("tqdm", None) == []


def test_terminal_bars_end_at_the_totals(capsys):
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.05, time_scale=0.001) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(1).with_limits(max_bytes=4000), progress="tqdm")
    bars = [s for s in job._driver.sinks if isinstance(s, TqdmSink)]
    assert len(bars) == 1 and bars[0].parts.n == job.status().height and bars[0].rows.n == 197
    err = capsys.readouterr().err
    assert "dotdigital.contacts requests" in err and "rows settled" in err


def test_a_job_displays_itself_richly_at_any_time():
    frame = sample("contacts.csv")
    with sandbox(job_duration=0.3, time_scale=0.001) as sb:
        job = frame.crm.submit(sb.dotdigital().contacts(2).with_limits(max_bytes=4000), wait=False, progress=False)
        early = job._repr_html_()
        job.wait()
    assert "crmframes · dotdigital.contacts" in early
    final = job._repr_html_()
    assert "dotdigital.contacts: done" in final and "accepted 196" in final and "rejected 1" in final
    assert "accepted 196" in repr(job)


def test_the_next_poll_shows_as_the_current_wait():
    st = state_after([*recorded()[:3], ev.Waiting(J, 2.0, 0, "poll", 7.5)])
    assert "waiting: next poll of partition 0 in 7.5 s" in render.summary(st.snapshot(now=2.0))
