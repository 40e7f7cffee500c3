"""crmframes: push polars frames into marketing platforms' bulk-import APIs.

``import crmframes as cf`` registers the ``crm`` namespace on ``pl.DataFrame`` and
``pl.LazyFrame``; connections build targets, targets are pure descriptions::

    dd = cf.Dotdigital(username=..., password=...)
    df.crm.plan(dd.contacts(address_book_id=123))
"""

from __future__ import annotations

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
    PayloadError,
    VendorError,
    VendorUnavailableError,
)
from crmframes._job import Job, asubmit, baseline, jobs, resume, submit
from crmframes._pipeline import Payload, Plan, payloads, plan
from crmframes._retry import RetryPolicy
from crmframes._target import Limits, Target
from crmframes._target import registered as targets
from crmframes.vendors.dengage import Dengage
from crmframes.vendors.dotdigital import Dotdigital
from crmframes.vendors.qualtrics import Qualtrics

try:
    __version__ = _version("crmframes")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_register()


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
    "Payload",
    "PayloadError",
    "Plan",
    "Qualtrics",
    "RetryPolicy",
    "Target",
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
