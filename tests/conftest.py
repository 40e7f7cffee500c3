"""Shared fixtures: connections, one target per registered endpoint, body decoders."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import crmframes as cf
from crmframes import samples

DATA = Path(samples.path("contacts.csv")).parent  # the sample files ship inside the package
# Dotdigital's own OpenAPI documents, copied into the repository (tests/specs/SOURCES.md)
SPECS = Path(__file__).resolve().parent / "specs" / "dotdigital"


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may talk to loopback only: any other connect attempt fails loudly."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1", "")):
            raise RuntimeError(f"test tried to reach {address!r}; only loopback is allowed")
        return real(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _journal_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs journal into a fresh directory per test, never into ~/.crmframes."""
    monkeypatch.setenv("CRMFRAMES_HOME", str(tmp_path_factory.mktemp("crmhome")))


def registered_targets(connect: Callable[[str], Any]) -> dict[str, cf.Target]:
    """One target per registered endpoint, built from its ``example`` on ``connect(vendor)``
    (e.g. ``sb.connect``): a new vendor's targets join the tests that use this by themselves."""
    out = {}
    for name, cls in cf.targets().items():
        assert cls.example is not None, f"{name} declares no example"
        out[name] = cls.build(connect(cls.vendor_and_method()[0]), **cls.example.options)
    return out


def connections() -> tuple[cf.Dotdigital, cf.Qualtrics, cf.Dengage]:
    return (
        cf.Dotdigital("apiuser@example.com", "pw-secret-1"),
        cf.Qualtrics("qx-secret-2", datacenter="fra1"),
        cf.Dengage("dn-user-3", "dn-secret-4"),
    )


def decode(target: cf.Target, body: bytes) -> list[dict[str, object]]:
    """Parse a request body back into one dict per record, in body order."""
    name = target.name
    if name == "dotdigital.contacts":
        text = _contacts_csv(target, body)
        return list(csv.DictReader(io.StringIO(text, newline="")))
    doc = json.loads(body)
    if name == "dotdigital.transactional_data":
        return [{**r, "json": json.loads(r["json"])} for r in doc]
    if name == "dotdigital.insight_data":
        return doc["records"]
    if name == "qualtrics.transaction_contacts":
        return doc["contacts"]
    if name == "dengage.contacts":
        return doc["contactDatas"]
    raise AssertionError(name)


def _contacts_csv(target: cf.Target, body: bytes) -> str:
    import base64

    if getattr(target, "upload", "") == "json":
        return base64.b64decode(json.loads(body)["data"]).decode("utf-8")
    b = target.boundary.encode()  # type: ignore[attr-defined]
    assert body.startswith(b"--" + b + b"\r\n") and body.endswith(b"\r\n--" + b + b"--\r\n")
    head, _, rest = body.partition(b"\r\n\r\n")
    assert b'filename="contacts.csv"' in head
    return rest[: -len(b"\r\n--" + b + b"--\r\n")].decode("utf-8")


@pytest.fixture
def conns() -> tuple[cf.Dotdigital, cf.Qualtrics, cf.Dengage]:
    return connections()


def sandbox(**options: object) -> cf.sandbox:  # type: ignore[valid-type]
    """``cf.sandbox`` whose Dotdigital account has the contacts sample's custom data fields."""
    return cf.sandbox(**{"data_fields": samples.FIELDS, **options})


def sample(name: str) -> pl.DataFrame:
    return samples.read(name)
