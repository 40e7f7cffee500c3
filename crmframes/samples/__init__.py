"""The sample files that ``crmframes demo``, the notebooks and the tests use, shipped inside
the package so an installed wheel runs its demo from any folder.

    from crmframes import samples
    samples.path("contacts.csv")          # a pathlib.Path to the file
    samples.read("orders.parquet")        # the file as a polars DataFrame

Each file carries a few deliberately bad rows (listed in ``data/make_samples.py``, which
regenerates them), so validation, rejection and fixing can be shown end to end.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import polars as pl

from crmframes._errors import ConfigError, did_you_mean

NAMES = ("contacts.csv", "dengage_contacts.csv", "orders.parquet", "survey_transactions.csv")
# contacts.csv's columns that are no default Dotdigital data field: an account the sample is
# sent to needs them, e.g. ``cf.sandbox(data_fields=cf.samples.FIELDS)``
FIELDS = {"CITY": "String", "LOYALTY_POINTS": "Numeric", "BIRTHDAY": "Date", "VIP": "Boolean"}


def path(name: str) -> Path:
    """The file ``name`` (one of ``NAMES``) inside the installed package."""
    if name not in NAMES:
        raise ConfigError(f"no sample {name!r}; the samples are {', '.join(NAMES)}.{did_you_mean(name, NAMES)}")
    # a wheel installs as plain files, so the resource is a real path on disk
    return Path(str(files(__name__).joinpath(name)))


def read(name: str) -> pl.DataFrame:
    """A sample file as a frame (CSV dates parsed)."""
    p = path(name)
    return pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, try_parse_dates=True)
