"""The log sink: one line per state change on the ``crmframes`` logger (polls at DEBUG).

Lines carry ids, states, counts and vendor messages, never credentials or bodies.
"""

from __future__ import annotations

import logging

from crmframes import _events as ev

log = logging.getLogger("crmframes")


def log_event(e: ev.Event) -> None:
    if not log.isEnabledFor(logging.DEBUG if isinstance(e, ev.Polled) else logging.INFO):
        return
    if isinstance(e, ev.Planned):
        log.info(
            "job %s: %s, %d rows (%d invalid, %d unchanged) in %d partition(s)",
            e.job_id,
            e.target,
            e.input_rows,
            e.invalid_rows,
            e.unchanged_rows,
            len(e.partitions),
        )
    elif isinstance(e, ev.Sending):
        log.info("job %s: partition %d sending", e.job_id, e.partition)
    elif isinstance(e, ev.Submitted):
        log.info("job %s: partition %d submitted (import %s, %s)", e.job_id, e.partition, e.import_id, e.vendor_state)
    elif isinstance(e, ev.Polled):
        log.debug("job %s: partition %d vendor state %s", e.job_id, e.partition, e.vendor_state)
    elif isinstance(e, ev.RetryScheduled):
        log.info("job %s: %s %s (HTTP %s), retry in %.2f s", e.job_id, e.call, e.why, e.status, e.wait)
    elif isinstance(e, ev.Requeued):
        log.info("job %s: partition %d back in the queue: %s", e.job_id, e.partition, e.why)
    elif isinstance(e, ev.Settled):
        log.info(
            "job %s: partition %d %s (%d rows rejected, %d in doubt)%s",
            e.job_id,
            e.partition,
            e.state,
            ev.count(e.faults, "rejected"),
            ev.count(e.faults, "in_doubt"),
            f": {e.message}" if e.message else "",
        )
    elif isinstance(e, ev.Unsettled):
        log.info("job %s: partition %d still %s: %s", e.job_id, e.partition, e.vendor_state, e.message)
    elif isinstance(e, ev.Stopped):
        log.info("job %s: %s%s", e.job_id, e.how, f": {e.message}" if e.message else "")
