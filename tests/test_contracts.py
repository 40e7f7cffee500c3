"""Every Dotdigital request body validates against Dotdigital's own OpenAPI schemas."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import polars as pl
import pytest
from openapi_schema_validator import OAS30Validator

from tests.conftest import SPECS, _contacts_csv, sample


def _spec(spec_file: str) -> dict:
    return json.loads(Path(SPECS, spec_file).read_text())


def _validator(spec_file: str, schema: dict, components: dict | None = None) -> OAS30Validator:
    # resolve local $refs against the document's components
    return OAS30Validator({**schema, "components": components or _spec(spec_file)["components"]})


def _insight_components() -> dict:
    """DD-ID's components with one defect mended.

    ``upsertInsightRecord`` is ``allOf[{contactIdentity, additionalProperties: false},
    insightRecord]``: read literally, that forbids ``key`` and ``json``, so no record can
    pass, the vendor's own examples included (asserted below). We drop that one
    ``additionalProperties: false`` and keep everything else strict.
    """
    components = copy.deepcopy(_spec("dotdigital-insight-data-service.json")["components"])
    del components["schemas"]["upsertInsightRecord"]["allOf"][0]["additionalProperties"]
    return components


def test_the_insight_spec_defect_is_real_its_own_example_fails_the_literal_schema():
    spec = _spec("dotdigital-insight-data-service.json")
    op = spec["paths"]["/insightData/v3/import"]["put"]["requestBody"]["content"]["application/json"]
    example = op["examples"]["Account level Insight data"]["value"]
    literal = _validator("dotdigital-insight-data-service.json", _ref("v3_import_body"))
    assert not literal.is_valid(example)
    mended = _validator("dotdigital-insight-data-service.json", _ref("v3_import_body"), _insight_components())
    assert mended.is_valid(example)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def test_transactional_data_bodies_match_the_v2_swagger_array_of_ApiTransactionalData(conns):
    dd = conns[0]
    t = dd.transactional_data("orders", key="order_id", contact="email").with_limits(max_bytes=20_000)
    v = _validator("dotdigital-v2-api-swagger.json", {"type": "array", "items": _ref("ApiTransactionalData")})
    bodies = list(sample("orders.parquet").crm.payloads(t))
    assert len(bodies) > 1
    for p in bodies:
        doc = json.loads(p.body)
        v.validate(doc)
        assert all(isinstance(json.loads(r["json"]), dict) for r in doc)


@pytest.mark.parametrize("scope", ["contact", "account"])
def test_insight_bodies_match_the_v3_import_body_schema(conns, scope):
    dd = conns[0]
    kwargs = {"contact": "email"} if scope == "contact" else {"fields": ["total", "items", "placed_at"]}
    t = dd.insight_data("orders-2026", scope=scope, type="ORDERS", key="order_id", **kwargs).with_limits(
        max_bytes=20_000
    )
    v = _validator("dotdigital-insight-data-service.json", _ref("v3_import_body"), _insight_components())
    bodies = list(sample("orders.parquet").crm.payloads(t))
    assert len(bodies) > 1
    for p in bodies:
        doc = json.loads(p.body)
        v.validate(doc)
        assert doc["collectionType"] == "orders"  # canonical casing is what we send


def test_contacts_json_upload_matches_ApiFileMedia_and_carries_the_csv(conns):
    dd = conns[0]
    t = dd.contacts(7, "Overwrite", upload="json").with_limits(max_bytes=3000)
    v = _validator("dotdigital-v2-api-swagger.json", _ref("ApiFileMedia"))
    for p in sample("contacts.csv").crm.payloads(t):
        v.validate(json.loads(p.body))
        assert _contacts_csv(t, p.body).startswith("Email,FIRSTNAME,LASTNAME")


def test_merge_option_in_the_path_is_a_name_from_the_swagger_enum(conns):
    spec = json.loads(Path(SPECS, "dotdigital-v2-api-swagger.json").read_text())
    allowed = spec["components"]["schemas"]["ApiContactMergeOptionTypes"]["enum"]
    for option in (0, 1, 2, "0", "overwrite", "OnlyOverwriteIfNotEmpty"):
        t = conns[0].contacts(5, option)
        assert t.merge_option in allowed
        assert t.path.endswith("/with-merge-option/" + t.merge_option)


def test_multipart_contacts_body_is_one_file_part_with_filename(conns):
    t = conns[0].contacts(5)
    df = pl.DataFrame({"email": ["a@example.com"], "Note": ['say "hi", then\nleave']})
    (p,) = list(df.crm.payloads(t))
    assert p.content_type == f"multipart/form-data; boundary={t.boundary}"
    assert _contacts_csv(t, p.body) == 'Email,Note\r\na@example.com,"say ""hi"", then\nleave"\r\n'
    assert p.body.count(t.boundary.encode()) == 2


def test_records_without_data_columns_send_an_empty_json_object(conns):
    dd = conns[0]
    frame = pl.DataFrame({"order_id": ["o1", "o2"], "email": ["a@example.com", "b@example.com"]})
    v2 = _validator("dotdigital-v2-api-swagger.json", {"type": "array", "items": _ref("ApiTransactionalData")})
    v3 = _validator("dotdigital-insight-data-service.json", _ref("v3_import_body"), _insight_components())
    (td,) = frame.crm.payloads(dd.transactional_data("orders", key="order_id", contact="email"))
    v2.validate(doc := json.loads(td.body))
    assert [r["json"] for r in doc] == ["{}", "{}"]
    for scope, kw in (("contact", {"contact": "email"}), ("account", {"fields": []})):
        (ins,) = frame.crm.payloads(dd.insight_data("orders-2026", scope=scope, type="orders", key="order_id", **kw))
        v3.validate(doc := json.loads(ins.body))
        assert [r["json"] for r in doc["records"]] == [{}, {}]
