"""The submit options, checked once and carried as one object from the call to the job."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

from crmframes._errors import ConfigError, did_you_mean
from crmframes._events import Sink
from crmframes._retry import RetryPolicy


class SubmitOptions(TypedDict, total=False):
    """What ``submit`` takes besides ``wait`` and ``timeout``; ``Options`` carries them as one
    object from the call to the job (``Options.of`` checks each)."""

    retry: RetryPolicy | None
    sinks: Iterable[Sink]
    max_reject_rate: float | None
    progress: bool | str | None
    check_account: bool
    skip_unchanged: bool
    chunk_rows: int | None


@dataclasses.dataclass(frozen=True)
class Options:
    """A job's options, checked: see ``submit`` for what each does."""

    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    sinks: tuple[Sink, ...] = ()
    max_reject_rate: float | None = None
    progress: bool | str | None = None
    check_account: bool = True
    skip_unchanged: bool = False
    chunk_rows: int | None = None  # None: sized by the rows' encoded bytes (``_batches``)

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> Options:
        names = [f.name for f in dataclasses.fields(cls)]
        for name in given:
            if name not in names:
                raise ConfigError(
                    f"unknown option {name!r}; submit takes wait, timeout, {', '.join(names)}.{did_you_mean(name, names)}"
                )
        values = dict(given)
        sinks = values.get("sinks", ())
        if isinstance(sinks, Iterable) and not isinstance(sinks, (str, bytes)):
            values["sinks"] = sinks = tuple(sinks)  # a generator is read once: by the check, then kept
        check_options(**values)
        if values.get("retry") is None:
            values.pop("retry", None)
        return cls(**values)


def check_options(**given: Any) -> None:
    """Every submit option's type and range, checked before anything runs (a ``ConfigError``
    that names the option, what it got and what is allowed)."""
    for name, value in given.items():
        ok, allowed = _OPTION_RULES[name](value)
        if not ok:
            raise ConfigError(f"{name} must be {allowed}; got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_OPTION_RULES: dict[str, Callable[[Any], tuple[bool, str]]] = {
    "max_reject_rate": lambda v: (v is None or (_number(v) and 0 <= v <= 1), "None or a share of rows from 0 to 1"),
    "retry": lambda v: (v is None or isinstance(v, RetryPolicy), "None or a cf.RetryPolicy(...)"),
    "progress": lambda v: (
        v is None or isinstance(v, bool) or v in ("widget", "tqdm"),
        "True, False, None, 'widget' or 'tqdm'",
    ),
    "sinks": lambda v: (
        not isinstance(v, (str, bytes)) and isinstance(v, Iterable) and all(callable(x) for x in v),
        "a list of callables that take an event",
    ),
    "wait": lambda v: (isinstance(v, bool), "True or False"),
    "check_account": lambda v: (isinstance(v, bool), "True or False"),
    "skip_unchanged": lambda v: (isinstance(v, bool), "True or False"),
    "chunk_rows": lambda v: (
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "None or rows per batch (an int >= 1)",
    ),
    "timeout": lambda v: (v is None or (_number(v) and v >= 0), "None or seconds (a number >= 0)"),
}
