"""Reusable pieces of validation: column resolution and vectorised row checks.

Each helper returns plain data (``Problem`` for the frame, ``Check`` for rows) so the
vendor modules only declare what their endpoint requires.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import polars as pl

from crmframes._encode import DType, is_unsupported
from crmframes._errors import did_you_mean
from crmframes._target import Check, Problem

# Pragmatic address check (RFC 5322 is far looser than what platforms accept): one @,
# a local part without spaces or specials, a dotted domain; no part starts or ends with
# a dot or holds two in a row (one regex: a second one for the dots cost as much again).
_LABEL = r"[^\s@\"(),:;<>\[\]\\.]+"
EMAIL_PATTERN = rf"^{_LABEL}(\.{_LABEL})*@{_LABEL}(\.{_LABEL})+$"
MAX_EMAIL = 254  # RFC 5321 path limit


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def find_column(schema: pl.Schema, *candidates: str) -> str | None:
    """The frame column matching any candidate, exactly first, then loosely (case, _ and -)."""
    for c in candidates:
        if c in schema:
            return c
    loose = {_norm(n): n for n in schema.names()}
    for c in candidates:
        if _norm(c) in loose:
            return loose[_norm(c)]
    return None


def missing_column(schema: pl.Schema, name: str, role: str, argument: str) -> Problem:
    names = schema.names()
    listed = ", ".join(repr(n) for n in names[:20]) + (" …" if len(names) > 20 else "")
    hint = did_you_mean(name, names)
    return Problem(
        None,
        name,
        "missing_column",
        f"{role}: column {name!r} is not in the frame.{hint} Rename the column or pass "
        f"{argument}=<column>. Available columns: {listed or '(none)'}.",
    )


def resolve(
    schema: pl.Schema, given: str | None, defaults: Sequence[str], role: str, argument: str
) -> tuple[str | None, list[Problem]]:
    """Resolve a mapped column: the given name exactly, else the first default that matches."""
    if given is not None:
        if given in schema:
            return given, []
        return None, [missing_column(schema, given, role, argument)]
    found = find_column(schema, *defaults)
    if found is None:
        return None, [missing_column(schema, defaults[0], role, argument)]
    return found, []


def unknown_fields(schema: pl.Schema, fields: Iterable[str], argument: str) -> list[Problem]:
    return [missing_column(schema, f, f"{argument} lists {f!r}", argument) for f in fields if f not in schema]


def unsupported(schema: pl.Schema, columns: Iterable[str], allow_nested: bool, vendor: str) -> list[Problem]:
    out = []
    for c in columns:
        dtype = schema[c]
        if is_unsupported(dtype):
            out.append(
                Problem(
                    None,
                    c,
                    "unsupported_type",
                    f"column {c!r} has type {dtype}, which {vendor} cannot store; cast it "
                    f"to a string or number, or drop it.",
                )
            )
        elif not allow_nested and isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            out.append(
                Problem(
                    None,
                    c,
                    "unsupported_type",
                    f"column {c!r} is nested ({dtype}); {vendor} takes flat values here. "
                    f"Flatten it (unnest / list.join) or drop it.",
                )
            )
    return out


def not_null(column: str, what: str) -> Check:
    return Check(
        column, "missing_value", f"{what} is missing (null); fill it or drop the row.", pl.col(column).is_null()
    )


# the same address with any whitespace around it: one regex tells a padded address from a bad one
_PADDED_PATTERN = rf"^\s*{EMAIL_PATTERN[1:-1]}\s*$"


def emails(column: str, what: str = "email") -> list[Check]:
    """Two checks: spaces at the edges (the fix is one call, so say it), and an address that
    is not valid even without them. One full regex per row, as before the split: a stripped
    copy and a second full match cost 0.08 s per 1M rows more (measured)."""
    value = pl.col(column).cast(pl.String)
    return [
        Check(
            column,
            "email_spaces",
            f"{what} has spaces (or tabs, line breaks) at its start or end, which the vendor refuses; strip "
            f"them: df.with_columns(pl.col({column!r}).str.strip_chars()).",
            value.str.contains(r"^\s|\s$"),
        ),
        Check(
            column,
            "invalid_email",
            f"{what} is not a valid email address (one '@', a dotted domain, no spaces, "
            f"at most {MAX_EMAIL} bytes); correct it or drop the row.",
            value.is_not_null() & (~value.str.contains(_PADDED_PATTERN) | (value.str.len_bytes() > MAX_EMAIL)),
        ),
    ]


def email(column: str, what: str = "email") -> Check:
    """Any address the vendor would refuse, as one check: either of ``emails`` (the rule the
    property tests hold the checks to)."""
    spaces, invalid = emails(column, what)
    return Check(column, "invalid_email", invalid.problem, spaces.invalid.fill_null(False) | invalid.invalid)


def max_chars(column: str, limit: int, what: str) -> Check:
    return Check(
        column,
        "too_long",
        f"{what} is longer than {limit} characters; shorten it.",
        pl.col(column).cast(pl.String).str.len_chars() > limit,
    )


def _non_finite(expr: pl.Expr, dtype: DType) -> pl.Expr | None:
    if isinstance(dtype, (pl.Float32, pl.Float64)):
        return expr.is_nan() | expr.is_infinite()
    if isinstance(dtype, pl.Struct):
        parts = [p for f in dtype.fields if (p := _non_finite(expr.struct.field(f.name), f.dtype)) is not None]
        if not parts:
            return None
        return pl.any_horizontal(parts)
    if isinstance(dtype, (pl.List, pl.Array)):
        inner = _non_finite(pl.element(), dtype.inner)
        if inner is None:
            return None
        listed = expr.cast(pl.List(dtype.inner)) if isinstance(dtype, pl.Array) else expr
        return listed.list.eval(inner.fill_null(False)).list.any()
    return None


def finite(schema: pl.Schema, columns: Iterable[str]) -> list[Check]:
    out = []
    for c in columns:
        cond = _non_finite(pl.col(c), schema[c])
        if cond is not None:
            out.append(
                Check(
                    c,
                    "not_finite",
                    f"{c!r} holds NaN or infinity, which JSON and the vendor cannot "
                    "represent; replace it with a number or null: "
                    f"df.with_columns(pl.when(pl.col({c!r}).is_finite()).then(pl.col({c!r}))) "
                    "turns both into null (fill_nan alone leaves infinity).",
                    cond,
                )
            )
    return out
