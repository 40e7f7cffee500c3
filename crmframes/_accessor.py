"""``df.crm`` / ``lf.crm``: thin, stateless; every verb calls a plain function."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Generic, TypeVar

import polars as pl

from crmframes import _pipeline
from crmframes._target import Target

F = TypeVar("F", pl.DataFrame, pl.LazyFrame)


class CrmNamespace(Generic[F]):
    """Validate, plan and encode a frame for a vendor target (``import crmframes``)."""

    def __init__(self, frame: F) -> None:
        self._frame: F = frame

    def validate(self, target: Target) -> pl.DataFrame:
        """Problems found before sending: ``(row, column, code, problem)``; empty = clean."""
        return _pipeline.validate(self._frame, _target(target))

    def plan(self, target: Target) -> _pipeline.Plan:
        """One row per request that would be sent, with bytes, row ranges and what closed it."""
        return _pipeline.plan(self._frame, _target(target))

    def payloads(self, target: Target) -> Iterator[_pipeline.Payload]:
        """The exact request bodies, lazily, with the input row numbers inside each."""
        return _pipeline.payloads(self._frame, _target(target))


def _target(target: object) -> Target:
    if not isinstance(target, Target):
        raise TypeError(
            f"expected a crmframes target such as cf.Dotdigital().contacts(...); got {type(target).__name__}"
        )
    return target


def register() -> None:
    """Register ``crm`` on DataFrame and LazyFrame, refusing to shadow another ``crm``."""
    for cls, registrar in ((pl.DataFrame, pl.api.register_dataframe_namespace),
                           (pl.LazyFrame, pl.api.register_lazyframe_namespace)):
        existing = inspect.getattr_static(cls, "crm", None)
        if existing is not None:
            if getattr(existing, "_ns", None) is CrmNamespace:
                continue
            raise ImportError(
                f"polars.{cls.__name__} already has an attribute 'crm' ({existing!r}); crmframes "
                "will not shadow it. Remove the other 'crm' namespace before importing crmframes."
            )
        registrar("crm")(CrmNamespace)

