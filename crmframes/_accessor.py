"""``df.crm`` / ``lf.crm``: thin, stateless; every verb calls a plain function."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

import polars as pl

from crmframes import _pipeline
from crmframes._errors import NotATargetError
from crmframes._target import Target

if TYPE_CHECKING:
    from typing import Unpack

    from crmframes._job import Job
    from crmframes._options import SubmitOptions

F = TypeVar("F", pl.DataFrame, pl.LazyFrame)


class CrmNamespace(Generic[F]):
    """Validate, plan and encode a frame for a vendor target (``import crmframes``)."""

    def __init__(self, frame: F) -> None:
        self._frame: F = frame

    def validate(self, target: Target, *, account: bool = False) -> pl.DataFrame:
        """Problems found before sending: ``(row, column, code, problem)``; empty = clean.

        ``account=True`` also asks the account (a few GETs, cached a minute): the destination
        exists, the credentials work, every column lands in a field and fits its type."""
        from crmframes._account import validate

        return validate(self._frame, _target(target), account=account)

    def plan(self, target: Target, *, skip_unchanged: bool = False) -> _pipeline.Plan:
        """One row per request that would be sent, with bytes, row ranges and what closed it.

        ``skip_unchanged``: leave out rows identical to what the vendor last accepted for this
        destination (``plan.unchanged_rows`` says how many)."""
        return _pipeline.plan(self._frame, _target(target), skip_unchanged=skip_unchanged)

    def payloads(self, target: Target) -> Iterator[_pipeline.Payload]:
        """The exact request bodies, lazily, with the input row numbers inside each."""
        return _pipeline.payloads(self._frame, _target(target))

    def submit(
        self,
        target: Target,
        *,
        wait: bool = True,
        timeout: float | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Job:
        """Send the frame: plan, submit each request under the vendor's limits, poll, fetch
        the reports. Returns a ``Job``; ``job.report()`` has one row per input row.

        Options (``cf.submit`` says more): ``retry``, ``sinks``, ``max_reject_rate`` (stop
        sending once the vendor rejects more than this share of the rows sent; the rest become
        ``not_sent``), ``progress`` (None: a live panel in a notebook, bars on a terminal;
        False or CRMFRAMES_PROGRESS=0: nothing), ``check_account`` (ask the account first and
        refuse a missing destination, refused credentials, or columns it cannot take) and
        ``skip_unchanged`` (send only rows new or changed since the vendor last accepted them
        for this destination; the others read ``unchanged``, DESIGN §10)."""
        from crmframes._job import submit

        return submit(self._frame, _target(target), wait=wait, timeout=timeout, **options)

    async def asubmit(
        self,
        target: Target,
        *,
        wait: bool = True,
        timeout: float | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Job:
        """The async twin of ``submit``: ``job = await df.crm.asubmit(t)``."""
        from crmframes._job import asubmit

        return await asubmit(self._frame, _target(target), wait=wait, timeout=timeout, **options)


def _target(target: object) -> Target:
    if not isinstance(target, Target):
        raise NotATargetError(
            f"expected a crmframes target such as cf.Dotdigital().contacts(...); got {type(target).__name__}"
        )
    return target


def register() -> None:
    """Register ``crm`` on DataFrame and LazyFrame, refusing to shadow another ``crm``."""
    for cls, registrar in (
        (pl.DataFrame, pl.api.register_dataframe_namespace),
        (pl.LazyFrame, pl.api.register_lazyframe_namespace),
    ):
        existing = inspect.getattr_static(cls, "crm", None)
        if existing is not None:
            if getattr(existing, "_ns", None) is CrmNamespace:
                continue
            raise ImportError(
                f"polars.{cls.__name__} already has an attribute 'crm' ({existing!r}); crmframes "
                "will not shadow it. Remove the other 'crm' namespace before importing crmframes."
            )
        registrar("crm")(CrmNamespace)
