"""The house (issue 18): the engine takes its I/O as arguments, vendors come from registries,
errors keep their causes. Behaviour is pinned by the other tests; these pin the seams."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest

import crmframes as cf
from crmframes import _engine, cli
from crmframes._connection import connection_class, connections
from crmframes._flow import Call, Reply, Request
from crmframes.sandbox import CREDS, Sandbox
from tests.conftest import sample, sandbox
from tests.test_engine_e2e import CASES


class FakeClock:
    """Vendor time that passes only when the engine sleeps: polls of 5–30 s take no time."""

    def __init__(self, start: float = 2_000_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_a_round_trip_runs_with_the_sandbox_in_process_on_an_injected_transport_sleep_and_clock():
    app = Sandbox(job_duration=0.0, data_fields=cf.samples.FIELDS)
    clock = FakeClock()
    eng = _engine.Engine(transport=httpx.ASGITransport(app=app), sleep=clock.sleep, clock=clock)
    with _engine.use(eng):
        dd = cf.Dotdigital(*CREDS["dotdigital"], base_url="http://127.0.0.1:9")  # nothing listens there
        job = sample("contacts.csv").crm.submit(dd.contacts(1001).with_limits(max_bytes=4000), progress=False)
    assert job.done and job.counts()["accepted"] > 150
    status = job.status()
    # every timestamp came from the injected clock, and the polls waited on the injected sleep
    assert status["submitted_at"].dt.year().unique().to_list() == [2033]  # 2e9 s after 1970
    assert clock.slept and min(clock.slept) >= 5.0, "Dotdigital's poll schedule starts at 5 s"
    assert app.state.store["dotdigital"]["address_books"]["1001"]
    assert _engine.engine() is not eng, "the process engine is back after the block"


def _failing_engine(exc: Exception) -> _engine.Engine:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async def no_wait(seconds: float) -> None:
        return None

    return _engine.Engine(transport=httpx.MockTransport(handler), sleep=no_wait)


def test_an_unreachable_vendor_keeps_the_transport_error_as_the_cause():
    refused = httpx.ConnectError("connection refused")
    with _engine.use(_failing_engine(refused)):
        dd = cf.Dotdigital("u@example.com", "pw", base_url="https://r1-api.dotdigital.com")
        with pytest.raises(cf.VendorUnavailableError, match=r"transport error \(connect\)") as err:
            sample("contacts.csv").crm.submit(
                dd.contacts(1), check_account=False, retry=cf.RetryPolicy(attempts=2, backoff=0), progress=False
            )
    assert err.value.__cause__ is refused


def test_a_flow_is_closed_when_its_call_fails():
    closed = []

    def flow() -> Iterator[Any]:
        try:
            yield Call(Request("GET", "/v2/account-info", "poll"))
        finally:
            closed.append(True)

    eng = _failing_engine(httpx.ConnectError("down"))
    conn = cf.Dotdigital("u@example.com", "pw", base_url="https://r1-api.dotdigital.com")
    running = flow()  # held here, so only the engine can close it (not the garbage collector)

    async def go() -> None:
        try:
            await eng.drive(running, eng.session(conn), cf.RetryPolicy(attempts=1))  # type: ignore[arg-type]
        finally:
            await eng.close_all()

    with pytest.raises(cf.VendorError):
        asyncio.run(go())
    assert closed == [True] and running.gi_frame is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("base_url", "scale"), [("http://127.0.0.1:8", 0.001), ("https://r1-api.dotdigital.com", 1.0)])
def test_only_the_loopback_sandbox_may_scale_vendor_time(base_url: str, scale: float):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}, headers={"X-Sandbox-Time-Scale": "0.001"})

    eng = _engine.Engine(transport=httpx.MockTransport(handler))
    conn = cf.Dotdigital("u@example.com", "pw", base_url=base_url)

    async def go() -> float:
        s = eng.session(conn)
        reply = await eng.call(s, Request("GET", "/v2/account-info", "poll"), cf.RetryPolicy())
        assert isinstance(reply, Reply)
        await s.client.aclose()
        return s.scale

    assert asyncio.run(go()) == scale


def test_the_read_timeout_is_the_connections_own():
    eng = _engine.Engine()
    held = [cls.from_environment() for cls in connections().values()]
    for conn in held:
        assert eng.session(conn).client.timeout.read == type(conn).timeout
    asyncio.run(eng.close_all())
    assert cf.Dotdigital.timeout == 121.0  # CONTRACTS §1


def test_every_registered_target_names_its_connection_and_method_and_has_an_example():
    for name, cls in cf.targets().items():
        key, method = cls.vendor_and_method()
        conn_cls = connection_class(key)
        assert callable(getattr(conn_cls, method)), name
        assert cls.example is not None, f"{name} has no example for the demo and the tests"
        built = cli._build(name, dict(cls.example.options))
        assert isinstance(built, cls) and cf.samples.path(cls.example.file).exists()
        assert connection_class(conn_cls.__name__) is conn_cls  # as the journal records it
    assert {c.name for c in CASES} == set(cf.targets()), "the end-to-end cases cover every registered target"


def test_connection_classes_come_from_the_registry():
    assert {c.__name__ for c in connections().values()} <= set(dir(cf))
    for cls in connections().values():
        assert getattr(cf, cls.__name__) is cls
    with pytest.raises(AttributeError):
        cf.NoSuchVendor  # noqa: B018


def test_the_sandbox_serves_every_registered_vendor_with_its_credentials():
    assert set(CREDS) == set(connections())
    with cf.sandbox() as sb:
        for key in connections():
            assert type(sb.connect(key)) is connection_class(key)
            assert getattr(sb, key)().base_url == sb.url


def test_the_concurrency_budget_is_scoped_as_the_limits_say():
    qx = cf.Qualtrics("t", datacenter="fra1")
    a, b = (qx.transaction_contacts("POOL_1", ml) for ml in ("CG_1", "CG_2"))
    assert a.limits.concurrency_scope == "mailing_list_id"
    assert a.concurrency_key() != b.concurrency_key() and a.concurrency_key().endswith("|CG_1")
    dd = cf.Dotdigital("u@example.com", "pw")
    assert dd.contacts(1).concurrency_key() == dd.contacts(2).concurrency_key() == dd.account()


def test_a_target_whose_concurrency_scope_names_no_option_is_refused():
    from dataclasses import dataclass, replace

    from crmframes._target import register

    base = cf.targets()["dengage.contacts"]

    @dataclass(frozen=True)
    class Odd(base):  # type: ignore[misc, valid-type]
        name = "dengage.odd"
        limits = replace(base.limits, concurrency_scope="list_id")

    with pytest.raises(cf.ConfigError, match="concurrency_scope"):
        register(Odd)


def test_importing_crmframes_loads_no_display_and_no_vendor_module():
    code = (
        "import sys, crmframes; "
        "print(sorted(m for m in sys.modules if m.startswith(('crmframes._display', 'crmframes.vendors'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_waiting_on_a_job_from_its_own_sink_is_a_usage_error():
    from crmframes import _events as ev

    raised: list[Exception] = []
    holder: list[cf.Job] = []

    def sink(e: object) -> None:
        if isinstance(e, ev.Submitted) and holder and not raised:
            try:
                holder[0].wait()
            except cf.UsageError as err:  # a CrmError: the sink is on the engine's own loop
                raised.append(err)

    with sandbox(job_duration=0.05, time_scale=0.001) as sb:
        job = cf.Job(sample("contacts.csv"), sb.dotdigital().contacts(1001), sinks=[sink], progress=False)
        holder.append(job)
        job.wait()
    assert job.done and len(raised) == 1 and "own engine loop" in str(raised[0])
    assert isinstance(raised[0], cf.CrmError)


def test_a_frame_method_given_no_target_is_a_crm_error_and_a_type_error():
    with pytest.raises(cf.NotATargetError) as err:
        pl.DataFrame({"a": [1]}).crm.plan("dotdigital.contacts")  # type: ignore[arg-type]
    assert isinstance(err.value, cf.CrmError) and isinstance(err.value, TypeError)


def test_a_vendor_declared_in_one_module_is_found_by_the_cli_resume_and_cf(monkeypatch):
    """What a new vendor module declares is all the CLI, ``cf.resume`` and ``cf.<Vendor>``
    need: nothing else lists vendors (here the module is this test's body)."""
    import json
    from dataclasses import dataclass, field

    from crmframes import _connection, _job, _target
    from crmframes._connection import Connection, register_connection
    from crmframes._target import Example, Limits, Target, register

    monkeypatch.setattr(_connection, "_CONNECTIONS", dict(connections()))
    monkeypatch.setattr(_target, "_REGISTRY", dict(cf.targets()))

    @register_connection
    class Acme(Connection):
        key = "acme"
        vendor = "Acme"
        timeout = 30.0

        def __init__(self, token: str | None = None, *, base_url: str = "https://api.acme.test") -> None:
            self.token, self.base_url = token, base_url

        def members(self, list_id: str) -> AcmeMembers:
            return AcmeMembers(self, list_id)

    @register
    @dataclass(frozen=True)
    class AcmeMembers(Target):
        name = "acme.members"
        limits = Limits(1000, 10, 2, None, "list_id", 1.0)
        example = Example("contacts.csv", {"list_id": "L1"})
        connection: Acme = field(compare=False)
        list_id: str

    assert cf.Acme is Acme and "Acme" in dir(cf)
    built = cli.build_target("acme.members", ["list_id=L7"])
    assert isinstance(built, AcmeMembers) and built.list_id == "L7"
    assert built.concurrency_key().endswith("|L7")  # the scope its limits name
    saved = {"target": "acme.members", "connection": json.dumps({"class": "Acme", "base_url": "https://x.test"})}
    rebuilt = _job._rebuild_target({**saved, "options": json.dumps({"list_id": "L9"})}, None)
    assert isinstance(rebuilt.connection, Acme) and rebuilt.connection.base_url == "https://x.test"
