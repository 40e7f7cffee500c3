"""The public face: namespace, connections, reprs without secrets, lazy = eager."""

from __future__ import annotations

import pickle
import subprocess
import sys

import polars as pl
import pytest

import crmframes as cf
from tests.conftest import connections, registered_targets, sample

SECRETS = ("pw-secret-1", "qx-secret-2", "dn-user-3", "dn-secret-4")


def test_public_names_are_exactly_the_sorted_all():
    assert cf.__all__ == sorted(cf.__all__)
    public = {n for n in dir(cf) if not n.startswith("_")} - {
        "annotations",
        "vendors",
        "cli",
    }  # submodules, once imported
    assert set(cf.__all__) - {"__version__"} == public


def test_import_registers_crm_on_dataframe_and_lazyframe():
    assert isinstance(pl.DataFrame({"a": [1]}).crm, cf.CrmNamespace)
    assert isinstance(pl.LazyFrame({"a": [1]}).crm, cf.CrmNamespace)


def test_import_refuses_to_shadow_another_crm_namespace():
    code = (
        "import polars as pl\n"
        "pl.api.register_dataframe_namespace('crm')(type('Other', (), {'__init__': lambda s, d: None}))\n"
        "import crmframes\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "will not shadow it" in out.stderr


def test_reprs_show_no_secret():
    dd, qx, dn = connections()
    targets = list(registered_targets({"dotdigital": dd, "qualtrics": qx, "dengage": dn}.__getitem__).values())
    text = " ".join(repr(x) + str(x) for x in [dd, qx, dn, *targets, dd.password, qx.token, dn.user_key])
    text += f"{dd.password}{dd.password!r}"
    for s in SECRETS:
        assert s not in text
    assert "***" in repr(dd) and "credentials=set" in repr(dd)
    with pytest.raises(TypeError):
        pickle.dumps(dd.password)


def test_credentials_and_region_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOTDIGITAL_USERNAME", "env-user")
    monkeypatch.setenv("DOTDIGITAL_PASSWORD", "env-pass")
    monkeypatch.setenv("DOTDIGITAL_REGION", "r2")
    monkeypatch.setenv("QUALTRICS_API_TOKEN", "env-token")
    monkeypatch.setenv("QUALTRICS_DATACENTER", "iad1")
    monkeypatch.setenv("DENGAGE_REGION", "tr")
    dd, qx, dn = cf.Dotdigital(), cf.Qualtrics(), cf.Dengage()
    assert dd.auth() == ("env-user", "env-pass") and dd.base_url == "https://r2-api.dotdigital.com"
    assert qx.headers() == {"X-API-TOKEN": "env-token"} and qx.base_url == "https://iad1.qualtrics.com"
    assert dn.base_url == "https://tr-api.dengage.com"


def test_missing_credentials_fail_only_when_needed_and_say_how_to_set_them(monkeypatch):
    for var in ("DENGAGE_USER_KEY", "DENGAGE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    dn = cf.Dengage()
    assert "credentials=missing" in repr(dn)
    pl.DataFrame({"contact_key": ["1"]}).crm.plan(dn.contacts())  # no credentials needed to plan
    with pytest.raises(cf.CredentialsError, match="DENGAGE_USER_KEY"):
        dn.login_body()


def test_base_url_overrides_the_region_host():
    dd = cf.Dotdigital("u", "p", base_url="http://127.0.0.1:8000/")
    assert dd.base_url == "http://127.0.0.1:8000"
    with pytest.raises(cf.ConfigError, match=r"http://"):
        cf.Dengage(base_url="ftp://x")


def test_registry_lists_five_targets_and_suggests_on_typos():
    from crmframes._target import target_class

    assert list(cf.targets()) == [
        "dengage.contacts",
        "dotdigital.contacts",
        "dotdigital.insight_data",
        "dotdigital.transactional_data",
        "qualtrics.transaction_contacts",
    ]
    with pytest.raises(cf.ConfigError, match=r"Did you mean 'dotdigital\.contacts'"):
        target_class("dotdigital.contact")


def test_every_limit_number_names_its_source():
    for cls in cf.targets().values():
        lim = cls.limits
        for name in ("max_bytes", "max_records", "max_concurrent", "min_interval"):
            if getattr(lim, name) is not None:
                assert lim.sources.get(name), (cls.name, name)


def test_lazy_parquet_plan_and_payloads_equal_the_eager_ones(tmp_path, conns):
    dd = conns[0]
    df = pl.concat([sample("orders.parquet").with_columns(pl.col("order_id") + f"-{i}") for i in range(20)])
    path = tmp_path / "orders.parquet"
    df.write_parquet(path, row_group_size=500)
    t = dd.insight_data("orders", scope="contact", type="orders", key="order_id").with_limits(max_bytes=100_000)
    eager = df.crm.plan(t)
    lazy = pl.scan_parquet(path).crm.plan(t)
    assert eager.partitions.equals(lazy.partitions) and eager.problems.equals(lazy.problems)
    assert eager.requests > 10
    a = [(p.body, p.rows.to_list()) for p in df.crm.payloads(t)]
    b = [(p.body, p.rows.to_list()) for p in pl.scan_parquet(path).crm.payloads(t)]
    assert a == b


def test_plan_has_text_and_html_reprs(conns):
    plan = sample("contacts.csv").crm.plan(conns[0].contacts(1))
    text, page = repr(plan), plan._repr_html_()
    assert "invalid rows   3" in text and "requests       1" in text
    assert "<table>" in page and "crmframes plan" in page


def test_payload_rows_are_the_input_row_numbers(conns):
    df = pl.DataFrame({"contact_key": [str(i) for i in range(2500)]})
    parts = list(df.crm.payloads(conns[2].contacts()))
    assert [len(p.rows) for p in parts] == [1000, 1000, 500]
    assert parts[2].rows[0] == 2000 and parts[2].rows.dtype == pl.Int64
