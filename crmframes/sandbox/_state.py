"""What every vendor module of the sandbox shares: knobs, imports in flight, the store.

Imports run through their vendor's states over ``job_duration`` real seconds; their
writes land in the store once, when the import ends with a word that means done, so
``GET /_sandbox/state`` shows exactly what a real account would hold.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.responses import Response

from crmframes._errors import ConfigError


@dataclass
class Knobs:
    """Behaviour of the sandbox; the same names everywhere (DESIGN §7).

    ``status_mix``: per endpoint, the words an import ends with and their weights, e.g.
    ``{"contacts": {"RejectedByWatchdog": 1}}`` (any word: a word the endpoint does not
    document, or a running word, leaves the import in it for ever). ``variants``: answer
    variants that real services show (CONTRACTS §6), by name (``VARIANTS``).
    """

    latency: float = 0.0  # seconds added to every vendor response
    job_duration: float = 1.0  # real seconds an import takes
    time_scale: float = 1.0  # multiplies vendor intervals (D·engage minute, Retry-After)
    p429: float = 0.0
    p5xx: float = 0.0
    p_drop: float = 0.0
    p_job_fail: float = 0.0
    seed: int | None = None
    status_mix: dict[str, dict[str, float]] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)

    def update(self, changes: dict[str, Any], variants: Iterable[str] = (), endpoints: Iterable[str] = ()) -> None:
        """Apply ``changes``; ``variants`` and ``endpoints``: the names the vendor modules declare."""
        variants, endpoints = set(variants), set(endpoints)
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ConfigError(f"unknown knob(s) {sorted(unknown)}; knobs are {sorted(names)}")
        for k, v in changes.items():
            if k == "seed":
                setattr(self, k, None if v is None else int(v))
            elif k == "status_mix":
                setattr(self, k, _status_mix(v, endpoints))
            elif k == "variants":
                chosen = [v] if isinstance(v, str) else list(v or [])
                bad = [x for x in chosen if x not in variants]
                if bad:
                    raise ConfigError(f"unknown variant(s) {bad}; variants are {sorted(variants)}")
                setattr(self, k, chosen)
            else:
                v = float(v)
                if v < 0 or (k.startswith("p") and v > 1):
                    raise ConfigError(f"{k} must be {'between 0 and 1' if k.startswith('p') else '>= 0'}; got {v}")
                setattr(self, k, v)


def _status_mix(value: Any, endpoints: set[str]) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise ConfigError("status_mix maps an endpoint to {word: weight}")
    out = {}
    for endpoint, words in value.items():
        if endpoint not in endpoints:
            raise ConfigError(f"status_mix: unknown endpoint {endpoint!r}; endpoints are {sorted(endpoints)}")
        if not isinstance(words, dict) or not words or any(float(w) < 0 for w in words.values()):
            raise ConfigError(f"status_mix[{endpoint!r}] must map words to weights >= 0")
        out[endpoint] = {str(word): float(w) for word, w in words.items()}
    return out


@dataclass
class Job:
    """One import in flight. ``final``: the word it ends with; ``applies``: that word means
    done, so its writes land in the store when it ends."""

    kind: str  # contacts | transactional | insight | qualtrics
    id: str
    starts: float  # may be later than submitted (Qualtrics runs one import per list at a time)
    duration: float
    final: str
    applies: bool
    rows: int
    terminal: bool = True  # False: ``final`` is a running or unknown word, so the import never ends
    apply: Callable[[SandboxState], None] | None = None  # more to store when it ends done (contact data)
    writes: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (state path, key)
    info: dict[str, Any] = field(default_factory=dict)
    applied: bool = False

    def progress(self, now: float) -> float:
        if now < self.starts:
            return 0.0
        return 1.0 if self.duration <= 0 else min(1.0, (now - self.starts) / self.duration)

    def done(self, now: float) -> bool:
        return self.progress(now) >= 1.0


class SandboxState:
    """What was stored, with a write count per key, plus the imports in flight."""

    def __init__(self, stores: Mapping[str, dict[str, Any]]) -> None:
        """``stores``: what each vendor's account holds when empty, by vendor key."""
        self.stores = stores
        self.lock = threading.Lock()
        self.store: dict[str, Any] = copy.deepcopy(dict(stores))
        self.jobs: dict[str, Job] = {}
        self.known_contacts: set[str] = set()
        self.tokens: dict[str, float] = {}  # D·engage token → expiry (monotonic)
        self.readonly_tokens: set[str] = set()
        self.dn_busy = False
        self.dn_last_call = -1e18
        self.qx_list_free: dict[str, float] = {}
        # account metadata the preflight reads: Dotdigital's contact data fields (by folded
        # name) and collections (name → scope, type)
        self.data_fields: dict[str, dict[str, Any]] = {}
        self.collections: dict[str, dict[str, str]] = {}

    def write(self, path: tuple[str, ...], key: str) -> None:
        node = self.store
        for p in path:
            node = node.setdefault(p, {})
        node[key] = node.get(key, 0) + 1

    def settle(self, now: float) -> None:
        """Apply the writes of every import that has ended with a done word (once)."""
        for job in self.jobs.values():
            if not job.applied and job.done(now):
                job.applied = True
                if job.applies:
                    for path, key in job.writes:
                        self.write(path, key)
                        if path[:2] == ("dotdigital", "address_books"):
                            self.known_contacts.add(key)
                    if job.apply is not None:
                        job.apply(self)

    def active(self, kind: str, now: float) -> int:
        """Imports of ``kind`` the vendor still counts as running (an import stuck in a running
        or unknown word counts too)."""
        return sum(1 for j in self.jobs.values() if j.kind == kind and (not j.done(now) or not j.terminal))


class BadRequest(Exception):
    """Raised by a handler to answer with ``response`` (a refusal in the vendor's shape)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    """A word drawn by weight (seeded, so a run is reproducible)."""
    words = list(weights)
    return rng.choices(words, weights=[weights[w] for w in words])[0] if sum(weights.values()) else words[0]
