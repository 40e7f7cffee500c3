"""Preflight against the account (DESIGN §6): the destination exists, the credentials work,
every column lands in a field of the account and fits its type — before anything is sent.

Each target declares its checks as a sans-I/O flow (``Target.account_checks``); this module
runs them through the engine (the only code that sends) and turns what they find into
problem rows, or into the error that stops a submit. The answers are cached per connection
for a minute (``Request.cache``), so a loop of submits asks the account once.
"""

from __future__ import annotations

import polars as pl

from crmframes import _engine, _loop, _pipeline
from crmframes._errors import AccountError, AuthenticationError
from crmframes._pipeline import PROBLEM_SCHEMA, Frame, schema_of
from crmframes._retry import RetryPolicy
from crmframes._target import Problem, Target

REFUSE = ("unknown_destination", "unmapped_column", "type_mismatch", "collection_conflict")


def problems(frame: Frame, target: Target, retry: RetryPolicy | None = None, *, fresh: bool = False) -> list[Problem]:
    """What the account says about this frame for this target (raises AuthenticationError)."""
    flow = target.account_checks(schema_of(frame))
    found: list[Problem] = _loop.result(
        _loop.start(_engine.preflight(target, flow, retry or RetryPolicy(), fresh=fresh))
    )
    return found


def frame_of(found: list[Problem]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row": [p.row for p in found],
            "column": [p.column for p in found],
            "code": [p.code for p in found],
            "problem": [p.problem for p in found],
        },
        schema=PROBLEM_SCHEMA,
    )


def validate(frame: Frame, target: Target, *, account: bool = False, chunk_rows: int | None = None) -> pl.DataFrame:
    """Problems as a frame ``(row, column, code, problem)``; empty means clean. ``account=True``
    adds what the account says (DESIGN §6), as rows with no row number; without it nothing
    is asked of the vendor."""
    offline = _pipeline.validate(frame, target, chunk_rows=chunk_rows)
    if not account:
        return offline
    return pl.concat([account_rows(frame, target), offline])


def account_rows(frame: Frame, target: Target) -> pl.DataFrame:
    """The account's problems as rows (refused credentials included, as a problem)."""
    try:
        found = problems(frame, target, fresh=True)  # asked for: ask the account now
    except AuthenticationError as e:
        found = [Problem(None, None, "credentials_refused", f"{e} {_variables(target)}")]
    return frame_of(found)


def require(frame: Frame, target: Target, retry: RetryPolicy | None = None) -> None:
    """Stop a submit before anything is journalled: refused credentials raise
    AuthenticationError (naming the variables), a missing destination or columns the account
    cannot take raise AccountError with the problems."""
    try:
        found = problems(frame, target, retry)
    except AuthenticationError as e:
        raise AuthenticationError(
            e.vendor, e.call, e.status, e.message, f"Check the credentials: {_variables(target)}"
        ) from e
    bad = [p for p in found if p.code in REFUSE]
    if not bad:
        return
    listed = "\n  - ".join(p.problem for p in bad)
    raise AccountError(
        f"{target.connection.vendor} cannot take this frame as {target.name} (checked with the "
        f"account, nothing was sent):\n  - {listed}\nFix these, or submit(..., check_account=False) "
        "to send anyway.",
        frame_of(bad),
    )


def _variables(target: Target) -> str:
    names = target.connection.credential_vars
    return f"set {' and '.join(names)} (or pass them as arguments)." if names else ""
