"""One retry policy for every vendor call (STYLE 9): decisions are data, the engine waits.

``decide`` looks at one failed attempt (an HTTP status or a transport error) and says
whether to try again and after how long, in *vendor seconds* (the engine scales them by
the sandbox time scale, so ``cf.sandbox(time_scale=0.001)`` turns a minute into 60 ms).

    429                 wait Retry-After, else X-RateLimit-Reset (seconds, or an epoch), else back off
    "too many imports"  wait for a slot (``busy_wait``), not a failure
    502 503 504         back off with jitter (the request was not processed)
    other 5xx           back off when the call is idempotent, else ``in_doubt`` (maybe applied)
    transport error     connection never made: retry; answer lost: retry only idempotent
                        calls, else ``in_doubt``
    other 4xx           ``refused``: fail fast with the vendor's message
    attempts used up    ``exhausted`` (the engine also gives up after ``give_up_after`` seconds)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

# 502/503/504 come from gateways and overload before the vendor touched the request; a 500
# may have come after it wrote something, so it is retried only where a repeat is harmless.
NOT_PROCESSED_5XX = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Decision:
    retry: bool
    wait: float = 0.0  # vendor seconds
    why: str = ""  # retried: rate_limited | busy | server_error | transport; not: in_doubt | refused | exhausted
    in_doubt: bool = False  # the request may have been processed and must not be repeated


@dataclass(frozen=True)
class RetryPolicy:
    """How patient every call is. ``RetryPolicy(backoff=0)`` switches waits off in tests."""

    attempts: int = 12  # tries per call, the first included
    backoff: float = 1.0  # first back-off, doubled per retry
    max_backoff: float = 60.0
    jitter: float = 0.5  # up to this share of the back-off is added at random
    busy_wait: float = 30.0  # wait for an import slot when the vendor says too many are active
    give_up_after: float = 900.0  # seconds of retrying one call before the vendor counts as down

    def backoff_for(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_backoff, self.backoff * 2 ** max(0, attempt - 1))
        return base * (1 + self.jitter * rng.random())

    def decide(
        self,
        attempt: int,
        *,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        busy: bool = False,
        transport: str | None = None,
        idempotent: bool = True,
        now_epoch: float = 0.0,
        rng: random.Random | None = None,
    ) -> Decision:
        """``attempt`` counts from 1; ``transport`` is "connect" (never sent) or "read" (answer lost)."""
        rng = rng or random.Random()
        if attempt >= self.attempts:
            return Decision(False, why="exhausted")
        if transport is not None:
            if transport == "connect" or idempotent:
                return Decision(True, self.backoff_for(attempt, rng), "transport")
            return Decision(False, why="in_doubt", in_doubt=True)
        assert status is not None
        if busy:
            return Decision(True, self.busy_wait, "busy")
        if status == 429:
            wait = retry_after(headers or {}, now_epoch)
            return Decision(True, self.backoff_for(attempt, rng) if wait is None else wait, "rate_limited")
        if status in NOT_PROCESSED_5XX or (status >= 500 and idempotent):
            return Decision(True, self.backoff_for(attempt, rng), "server_error")
        if status >= 500:
            return Decision(False, why="in_doubt", in_doubt=True)
        return Decision(False, why="refused")


def retry_after(headers: Mapping[str, str], now_epoch: float) -> float | None:
    """Seconds to wait from ``Retry-After`` or ``X-RateLimit-Reset``.

    Dotdigital documents X-RateLimit-Reset as seconds until reset, a secondary source says a
    UTC epoch [C]: a value past 2001 in epoch seconds is read as an epoch.
    """
    for name in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue  # an HTTP-date Retry-After: rare for these vendors; fall back to back-off
        if value > 1e9:
            value -= now_epoch
        return max(0.0, value)
    return None
