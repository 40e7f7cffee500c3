"""tqdm bars in a terminal: requests and rows settled, with the current wait as postfix."""

from __future__ import annotations

import threading
import time
from typing import Any

from crmframes._events import Event, RetryScheduled, Settled, Stopped


class TqdmSink:
    def __init__(self, job: Any) -> None:
        from tqdm.auto import tqdm

        p = job.state.snapshot(time.time())
        self.lock = threading.Lock()
        self.parts = tqdm(total=p.partitions, desc=f"{p.target} requests", unit="req", position=0, leave=True)
        self.rows = tqdm(total=p.rows_total, desc="rows settled", unit="row", unit_scale=True, position=1, leave=True)
        if p.unchanged_rows:
            self.rows.set_postfix_str(f"{p.unchanged_rows:,} unchanged, not sent")
        self.unchanged = p.unchanged_rows
        self.job = job

    def __call__(self, e: Event) -> None:
        with self.lock:
            if isinstance(e, Settled):
                self.parts.update(1)
                self.rows.update(self.job.state.partitions[e.partition].rows)
                rejected = self.job.state.snapshot(time.time()).rows_rejected
                said = [f"{rejected:,} rejected"] if rejected else []
                said += [f"{self.unchanged:,} unchanged, not sent"] if self.unchanged else []
                if said:
                    self.rows.set_postfix_str(", ".join(said))
            elif isinstance(e, RetryScheduled):
                self.parts.set_postfix_str(f"{e.why}, retry in {e.wait:.1f} s")
            elif isinstance(e, Stopped):
                self.parts.set_postfix_str(e.how)
                self.parts.close()
                self.rows.close()
