"""crmframes: push polars frames into marketing platforms' bulk-import APIs.

``import crmframes as cf`` registers the ``crm`` namespace on ``pl.DataFrame`` and
``pl.LazyFrame``; connections build targets, targets are pure descriptions::

    dd = cf.Dotdigital(username=..., password=...)
    df.crm.plan(dd.contacts(address_book_id=123))
"""

from __future__ import annotations

import typing as _typing
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from crmframes import samples
from crmframes._accessor import CrmNamespace
from crmframes._accessor import register as _register
from crmframes._account import validate
from crmframes._errors import (
    AccountError,
    AuthenticationError,
    ColumnNotFoundError,
    ConfigError,
    CredentialsError,
    CrmError,
    CrmWarning,
    FrameError,
    NotATargetError,
    PayloadError,
    UsageError,
    VendorError,
    VendorUnavailableError,
)
from crmframes._job import Job, asubmit, baseline, jobs, resume, submit
from crmframes._pipeline import Payload, Plan, payloads, plan
from crmframes._retry import RetryPolicy
from crmframes._target import Limits, Target
from crmframes._target import registered as targets

if _typing.TYPE_CHECKING:  # for type checkers; at run time they come from the registry (__getattr__)
    from crmframes.vendors.dengage import Dengage
    from crmframes.vendors.dotdigital import Dotdigital
    from crmframes.vendors.qualtrics import Qualtrics

try:
    __version__ = _version("crmframes")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_register()


def __getattr__(name: str) -> type:
    """``cf.Dotdigital`` and every other registered connection class, by class name: a vendor
    module registers itself, and nothing here lists vendors."""
    from crmframes._connection import connections

    for cls in connections().values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'crmframes' has no attribute {name!r}")


def __dir__() -> list[str]:
    from crmframes._connection import connections

    return sorted({*globals(), *(c.__name__ for c in connections().values())})


def sandbox(**options: object) -> object:
    """Start the embedded vendor sandbox on a free loopback port (see ``crmframes.sandbox``).

    ``with cf.sandbox(job_duration=2) as sb: dd = sb.dotdigital()``; imported on first use.
    """
    from crmframes.sandbox import sandbox as start

    return start(**options)


__all__ = [
    "AccountError",
    "AuthenticationError",
    "ColumnNotFoundError",
    "ConfigError",
    "CredentialsError",
    "CrmError",
    "CrmNamespace",
    "CrmWarning",
    "Dengage",
    "Dotdigital",
    "FrameError",
    "Job",
    "Limits",
    "NotATargetError",
    "Payload",
    "PayloadError",
    "Plan",
    "Qualtrics",
    "RetryPolicy",
    "Target",
    "UsageError",
    "VendorError",
    "VendorUnavailableError",
    "__version__",
    "asubmit",
    "baseline",
    "jobs",
    "payloads",
    "plan",
    "resume",
    "samples",
    "sandbox",
    "submit",
    "targets",
    "validate",
]
