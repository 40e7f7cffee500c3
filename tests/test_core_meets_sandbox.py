"""The encoders' bodies, posted as they are to the served sandbox, are accepted and stored.

This is not the engine (no retries, no polling policy): a plain httpx loop that proves
the payloads of every target are what the sandbox's vendor contracts accept.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import polars as pl

from tests.conftest import sample, sandbox


def wait(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (out := fn()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return out


def test_import_crmframes_loads_neither_the_sandbox_nor_the_widget_stack():
    code = "import sys, crmframes; print(sorted(m for m in ('starlette', 'uvicorn', 'ipywidgets', 'tqdm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_targets_payloads_are_accepted_and_stored_by_the_sandbox():
    with sandbox(job_duration=0.2, time_scale=0.001) as sb:
        dd, qx, dn = sb.dotdigital(), sb.qualtrics(), sb.dengage()
        assert "sandbox-password" not in repr(dd) + repr(dn)
        contacts = sample("contacts.csv")
        t = dd.contacts(1001)
        with httpx.Client(base_url=sb.url, auth=dd.auth(), timeout=30) as c:
            ids = [
                c.post(t.path, content=p.body, headers={"content-type": p.content_type}).json()["id"]
                for p in contacts.crm.payloads(t.with_limits(max_bytes=4000))
            ]
            assert len(ids) > 3
            for iid in ids:
                wait(lambda iid=iid: c.get(f"/v2/contacts/import/{iid}").json()["status"] == "Finished")
            book = sb.state()["dotdigital"]["address_books"]["1001"]
            # 197 valid rows; the sandbox rejects the seeded suppressed address
            assert len(book) == 196 and set(book.values()) == {1}

            orders = sample("orders.parquet")
            td = dd.transactional_data("orders", key="order_id", contact="email")
            for p in orders.crm.payloads(td.with_limits(max_bytes=30_000)):
                r = c.post(td.path, content=p.body, headers={"content-type": p.content_type})
                assert r.status_code == 202
            ins = dd.insight_data("orders_v3", scope="contact", type="orders", key="order_id")
            for p in orders.crm.payloads(ins):
                assert c.put(ins.path, content=p.body, headers={"content-type": p.content_type}).status_code == 202
            collections = wait(
                lambda: (
                    (s := sb.state()["dotdigital"]["collections"]).get("orders_v3")
                    and len(s.get("orders", {})) > 0
                    and s
                )
            )
        # 297 valid orders; the one for a stranger is rejected by the vendor
        time.sleep(0.3)
        collections = sb.state()["dotdigital"]["collections"]
        assert len(collections["orders"]) == 296 and len(collections["orders_v3"]) == 296

        with httpx.Client(base_url=sb.url, headers=qx.headers(), timeout=30) as c:
            bid = c.post("/API/v3/directories/POOL_demo/transactionbatches", json={"transactionIds": []}).json()[
                "result"
            ]["id"]
            qt = qx.transaction_contacts(
                "POOL_demo", "CG_demo", transaction_fields=["order_id", "amount"], batch_id=bid
            )
            (p,) = list(sample("survey_transactions.csv").crm.payloads(qt))
            res = c.post(qt.path, content=p.body, headers={"content-type": p.content_type}).json()["result"]
            assert res["contacts"]["unprocessed"] == []
            url = f"{qt.path}/{res['id']}/summary"
            summary = wait(lambda: (s := c.get(url).json()["result"])["status"] == "complete" and s)
        # 119 valid rows; two share an address in different case: one contact, two transactions
        count = summary["contacts"]["count"]
        assert (count["added"], count["updated"], summary["transactions"]["count"]["created"]) == (118, 1, 119)
        assert sum(sb.state()["qualtrics"]["batches"][bid].values()) == 119 and summary["invalidEmails"] == []

        with httpx.Client(base_url=sb.url, timeout=30) as c:
            token = c.post("/rest/login", json=dn.login_body()).json()["access_token"]
            dt = dn.contacts()
            frame = sample("dengage_contacts.csv").with_columns(pl.col("birth_date").cast(pl.String))
            for p in frame.crm.payloads(dt.with_limits(max_records=100)):
                r = wait(
                    lambda p=p: (
                        (
                            r := c.post(
                                dt.path,
                                content=p.body,
                                headers={"content-type": p.content_type, "Authorization": f"Bearer {token}"},
                            )
                        ).status_code
                        == 200
                        and r
                    )
                )
                assert r.json()["data"]["errors"] == []
        assert len(sb.state()["dengage"]["contacts"]) == 196


def test_sandbox_is_callable_both_before_and_after_its_module_is_imported():
    import crmframes.sandbox

    with crmframes.sandbox(job_duration=0.1) as sb, sandbox() as sb2:
        assert sb.url != sb2.url and sb.state()["dengage"] == {"contacts": {}}
