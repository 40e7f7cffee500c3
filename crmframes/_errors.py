"""The one error tree of crmframes.

    CrmError                      base of everything raised on purpose
    ├── ConfigError (ValueError)  a connection or target built with a bad option
    │   └── CredentialsError      credentials missing where a call needs them
    ├── FrameError (ValueError)   the frame cannot be used for the target at all
    │   └── ColumnNotFoundError   a mapped or required column is absent
    ├── AccountError              the account lacks the destination, or columns land in no field
    ├── PayloadError              an internal guarantee broke while encoding (a bug)
    ├── NotATargetError (TypeError)  a frame method was given something that is not a target
    ├── UsageError                a call the running state does not allow (e.g. job.wait()
    │                             from a sink, on the engine's own loop)
    ├── InDoubt                   a request that must not be repeated lost its answer; never
    │                             reaches the user: its rows read ``in_doubt``
    └── VendorError               the vendor refused a call; its own message is kept
        ├── AuthenticationError   401/403: credentials or permission; fix and ``job.wait()``
        └── VendorUnavailableError  still 429/5xx/unreachable after the retry budget
                                  (transient: the job stays resumable)

    CrmWarning (UserWarning)      vendor totals that do not reconcile with what was sent

Row-level problems (a bad email, a null key, a row larger than a request) are never
exceptions: they are rows of ``df.crm.validate(t)`` and outcome ``invalid`` in reports.
Every message says what was expected, what was found, and what to try.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CrmError(Exception):
    """Base class of every error crmframes raises on purpose."""

    job: object = None  # set when a job's run raised it, so the job's report stays reachable


class ConfigError(CrmError, ValueError):
    """A connection or target option is not one the vendor accepts."""


class CredentialsError(ConfigError):
    """Credentials are missing; the message names the argument and environment variable."""


class FrameError(CrmError, ValueError):
    """The frame cannot be encoded for this target (missing columns, unsupported types)."""


class ColumnNotFoundError(FrameError, KeyError):
    """A column the target needs is not in the frame."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class AccountError(CrmError):
    """The account cannot take the frame as the target describes it (found before sending):
    a destination it does not have (address book, mailing list, transaction batch), or
    columns that match no field of the account or do not fit its type. ``problems`` is the
    frame of ``df.crm.validate(t, account=True)``'s account rows."""

    def __init__(self, message: str, problems: object = None) -> None:
        super().__init__(message)
        self.problems = problems


class PayloadError(CrmError):
    """An encoded body broke a guarantee (size, row count); this is a crmframes bug."""


class NotATargetError(CrmError, TypeError):
    """``df.crm.plan(x)`` and friends were given something that is not a target."""


class UsageError(CrmError):
    """A call the running state does not allow; the message says what to call instead."""


class InDoubt(CrmError):
    """A request that must not be repeated lost its answer: it may or may not have been applied.

    The engine settles the partition ``in_doubt`` with this message; it is not raised to users."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice (case-insensitive), or ''."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f" Did you mean {lowered[name.lower()]!r}?"
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" Did you mean {lowered[close[0]]!r}?" if close else ""


def one_of(value: object, allowed: Iterable[object], what: str) -> str:
    """A message for a value outside an allowed set."""
    allowed = list(allowed)
    hint = did_you_mean(str(value), [str(a) for a in allowed])
    listed = ", ".join(repr(a) for a in allowed)
    return f"{what} must be one of {listed}; got {value!r}.{hint}"


class VendorError(CrmError):
    """The vendor refused a call. ``vendor``, ``call`` (submit, poll, report, login, batch),
    ``status`` and the vendor's ``message`` are kept as attributes."""

    transient = False

    def __init__(self, vendor: str, call: str, status: int | None, message: str, hint: str = "") -> None:
        self.vendor, self.call, self.status, self.message = vendor, call, status, message
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{vendor} refused the {call} call ({where}): {message}" + (f" {hint}" if hint else ""))


class AuthenticationError(VendorError):
    """401 or 403: the credentials are wrong or lack a permission."""


class VendorUnavailableError(VendorError):
    """The vendor kept answering 429/5xx or could not be reached for the whole retry budget."""

    transient = True


class CrmWarning(UserWarning):
    """Something to check, not an error: e.g. vendor totals that do not match what was sent."""
