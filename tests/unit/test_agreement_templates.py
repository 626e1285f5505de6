"""Agreement templates (SPEC §3 "Templates", §13): the catalog billing reads at start and the
two admin routes that serve it.

- Every template is complete: its body has no `client_id` (nor `version`), and adding
  `client_id` alone makes a body the PUT takes, as it stands (the body is the agreement's own
  wire form, so a template put back and fetched again is the same body).
- A broken template file stops billing's app from being built, with a message naming the file
  and the field.
- Every template carries the service levels its industry signs (SPEC §11): 10-12 % of the tier
  fee at risk, a working calendar without holidays (the client adds its own), and levels that
  each measure a class the template's own rules produce, their pool shares at most 100 in all.
  No template has a commitment (it needs `effective_from`); the example each file comments out
  is one that holds once `effective_from` is given.
- The list is sorted by name; an unknown name is 404, a name that is no industry slug 422; no
  key 401, an intake or client key 403; every answer is one the OpenAPI document declares.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import jsonschema_rs
import orjson
import pytest
from fastapi import FastAPI

from services.billing import templates_api
from services.billing.app import BillingSettings, create_app
from services.billing.openapi import AGREEMENT_BODY_SCHEMA, TEMPLATE_BODY_SCHEMA
from services.billing.template_catalog import (
    TemplateCatalog,
    TemplateError,
    parse_template,
    template_body,
)
from services.billing.templates_api import TEMPLATES_DIR, read_catalog
from shared.domain.agreement.agreement import parse_agreement_body
from shared.domain.agreement.fields import ServiceClass
from shared.infra.auth import KeyRing
from shared.infra.http import set_state
from tests.unit.test_billing_api import ADMIN, AUTH, INTAKE, assert_documented

CLIENT_KEY = "client-key-acme-0123456789"
LIST = "/v1/agreement-templates"
ONE = "/v1/agreement-templates/{name}"

GOOD = """\
template: {industry: Testing, description: A small template for the tests.}
currency: USD
classification:
  rules:
    - id: qa
      when: {queue: {regex: '(?i)\\bqa\\b'}}
      then: {service_line: data_entry, complexity: basic}
pricing:
  weights: {basic: 1, standard: 2, complex: 5}
  tiers: [{name: Flat, up_to: null, fee: "100.00"}]
"""


@pytest.fixture(scope="module")
def catalog() -> TemplateCatalog:
    return read_catalog()


# --- the catalog --------------------------------------------------------------------------------


def test_the_list_is_sorted_by_name_with_each_industry_and_description(
    catalog: TemplateCatalog,
) -> None:
    listed = catalog.listing().templates
    names = [entry.name for entry in listed]
    assert names == sorted(names)
    assert names == sorted(path.stem for path in TEMPLATES_DIR.glob("*.yaml"))
    assert {"healthcare", "banking", "insurance", "retail", "telecom", "logistics"} <= set(names)
    for entry in listed:
        assert entry.industry and entry.description
        assert "\n" not in entry.description  # folded to one line for the CLI's table


def test_a_template_body_plus_client_id_alone_is_a_put_body_that_comes_back_the_same(
    catalog: TemplateCatalog,
) -> None:
    for template in catalog:
        body = dict(template.body)
        assert "client_id" not in body and "version" not in body, template.name
        jsonschema_rs.validate(TEMPLATE_BODY_SCHEMA, body)
        put = {**body, "client_id": "acme"}
        jsonschema_rs.validate(AGREEMENT_BODY_SCHEMA, orjson.loads(orjson.dumps(put)))
        stored = parse_agreement_body(orjson.dumps(put))  # exactly what the PUT parses
        assert stored.client_id == "acme"
        assert template_body(stored) == body, template.name


def test_every_template_has_service_levels_that_measure_work_its_rules_produce(
    catalog: TemplateCatalog,
) -> None:
    for template in catalog:
        agreement = parse_agreement_body(orjson.dumps({**template.body, "client_id": "acme"}))
        terms = agreement.service_levels
        assert terms is not None, template.name
        assert Decimal(10) <= terms.at_risk_percent <= Decimal(12), template.name
        assert terms.calendar is not None and terms.calendar.holidays == (), template.name
        assert 2 <= len(terms.levels) <= 4, template.name
        pooled = sum((level.pool_percent for level in terms.levels), Decimal(0))
        assert pooled <= 100, (template.name, pooled)
        produced = {rule.then.service_class for rule in agreement.classification.rules}
        lines = {service_class.service_line for service_class in produced}
        for level in terms.levels:
            # A level measures a class some rule of the template places, and every complexity
            # it lists is one: no level, nor part of one, waits for items that never come.
            assert level.service_line in lines, (template.name, level.id)
            listed = [ServiceClass(level.service_line, c) for c in level.complexity or ()]
            assert [c for c in listed if c not in produced] == [], (template.name, level.id)
        assert agreement.commitment is None, template.name


def test_each_templates_commented_commitment_holds_once_effective_from_is_given() -> None:
    for path in sorted(TEMPLATES_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        [example] = [line for line in text.splitlines() if line.startswith("# commitment:")]
        assert example.endswith("# needs effective_from"), path.name
        uncommented = f"{text}\n{example.removeprefix('# ')}\n"
        with pytest.raises(TemplateError, match=r"commitment: needs effective_from"):
            parse_template(path.name, uncommented)
        dated = parse_template(path.name, f"{uncommented}effective_from: 2027-01-01\n")
        assert dated.body["commitment"]["annual_minimum"], path.name


def test_a_broken_template_names_its_file_and_the_field() -> None:
    broken_fee = GOOD.replace('fee: "100.00"', 'fee: "100.001"')
    cases = {
        "not YAML": ("qa.yaml", "template: [", "qa.yaml: not valid YAML"),
        "not a mapping": ("qa.yaml", "- a\n- b\n", "qa.yaml: an agreement YAML document"),
        "invalid agreement": ("qa.yaml", broken_fee, "qa.yaml: not a valid agreement: "
                              "pricing.tiers.0.fee: has 3 decimal places"),
        "a client_id": ("qa.yaml", f"client_id: acme\n{GOOD}", "qa.yaml: client_id: "),
        "a version": ("qa.yaml", f"version: 3\n{GOOD}", "qa.yaml: version: "),
        "no entry": ("qa.yaml", GOOD.split("\n", 1)[1], "qa.yaml: template: needs exactly"),
        "an empty industry": ("qa.yaml", GOOD.replace("Testing", "' '"),
                              "qa.yaml: template.industry: "),
        "a name that is no slug": ("Q A.yaml", GOOD, "Q A.yaml: a template file is <name>.yaml"),
        "another suffix": ("qa.yml", GOOD, "qa.yml: a template file is <name>.yaml"),
    }  # fmt: skip
    for case, (file_name, text, message) in cases.items():
        with pytest.raises(TemplateError) as raised:
            parse_template(file_name, text)
        assert str(raised.value).startswith(message), (case, str(raised.value))


def test_a_good_template_file_parses_with_its_entry_stripped() -> None:
    template = parse_template("qa.yaml", GOOD)
    assert template.summary.model_dump() == {
        "name": "qa",
        "industry": "Testing",
        "description": "A small template for the tests.",
    }
    assert "template" not in template.body
    assert template.body["classification"]["rules"][0]["id"] == "qa"


def test_reading_a_directory_names_the_broken_file_and_refuses_an_empty_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "qa.yaml").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not a template: ignored")
    assert [t.name for t in read_catalog(tmp_path)] == ["qa"]

    (tmp_path / "retail.yaml").write_text(GOOD.replace("regex: '(?i)\\bqa\\b'", "regex: '(?<=a)b'"))
    with pytest.raises(TemplateError) as raised:
        read_catalog(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and "retail.yaml: " in message
    assert "classification.rules.0.when.queue.regex" in message, message

    (tmp_path / "undecodable.yaml").write_bytes(b"name: \xff\n")
    (tmp_path / "retail.yaml").unlink()
    with pytest.raises(TemplateError, match=r"undecodable\.yaml: not UTF-8"):
        read_catalog(tmp_path)

    with pytest.raises(TemplateError, match="no agreement template"):
        read_catalog(tmp_path / "missing")


def settings() -> BillingSettings:
    return BillingSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        tierline_admin_key=ADMIN,
        tierline_intake_keys=f"zendesk={INTAKE}",
    )


def test_a_broken_template_stops_billing_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in TEMPLATES_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    broken = tmp_path / "banking.yaml"
    broken.write_text(broken.read_text().replace("weights: {basic: 1,", "weights: {"))
    monkeypatch.setattr(templates_api, "TEMPLATES_DIR", tmp_path)
    with pytest.raises(TemplateError, match=r"banking\.yaml: .*pricing\.weights\.basic"):
        create_app(settings())


# --- the routes ---------------------------------------------------------------------------------


@pytest.fixture
def app(catalog: TemplateCatalog) -> FastAPI:
    """The templates router on a bare app, with the catalog the app would have built."""
    app = FastAPI(title="billing templates")
    app.state.keys = KeyRing(
        admin_key=ADMIN, intake_keys={INTAKE: "zendesk"}, client_keys={CLIENT_KEY: "acme"}
    )
    app.include_router(templates_api.router)
    set_state(app, catalog)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=AUTH) as http:
        yield http


async def test_the_list_and_each_template_are_served_to_the_admin_key(
    app: FastAPI, client: httpx.AsyncClient, catalog: TemplateCatalog
) -> None:
    listed = await client.get(LIST)
    assert listed.status_code == 200
    assert_documented(app, "get", LIST, listed)
    assert listed.json() == catalog.listing().model_dump(mode="json")
    for entry in listed.json()["templates"]:
        assert set(entry) == {"name", "industry", "description"}
        one = await client.get(f"{LIST}/{entry['name']}")
        assert one.status_code == 200, one.text
        assert_documented(app, "get", ONE, one)
        template = catalog.get(entry["name"])
        assert template is not None and one.json() == orjson.loads(orjson.dumps(template.body))


async def test_an_unknown_name_is_404_and_a_name_that_is_no_slug_422(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    unknown = await client.get(f"{LIST}/aerospace")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no agreement template aerospace"}
    assert_documented(app, "get", ONE, unknown)
    for bad in ("Healthcare", "public_sector", "-retail", "retail-", "a" * 65, "%C3%A9", "%00"):
        answer = await client.get(f"{LIST}/{bad}")
        assert answer.status_code == 422, (bad, answer.text)
        assert [e["loc"] for e in answer.json()["errors"]] == [["path", "name"]]
        assert_documented(app, "get", ONE, answer)


@pytest.mark.parametrize("path", [LIST, f"{LIST}/healthcare"])
async def test_only_the_admin_key_reads_templates(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    route = ONE if path != LIST else LIST
    for headers, status in (
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer not-a-key-of-ours-at-all"}, 401),
        ({"Authorization": f"Bearer {INTAKE}"}, 403),
        ({"Authorization": f"Bearer {CLIENT_KEY}"}, 403),
    ):
        answer = await client.get(path, headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert_documented(app, "get", route, answer)


def test_billings_app_serves_and_documents_the_template_routes() -> None:
    document = create_app(settings()).openapi()
    listing = document["paths"][LIST]["get"]
    one = document["paths"][ONE]["get"]
    assert {"200", "401", "403"} <= set(listing["responses"])
    assert {"200", "401", "403", "404", "422"} <= set(one["responses"])
    [name] = one["parameters"]
    assert name["schema"]["pattern"] == "^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$"
    body = one["responses"]["200"]["content"]["application/json"]["schema"]
    assert body == TEMPLATE_BODY_SCHEMA
    assert "client_id" not in body["properties"] and "version" not in body["properties"]
    assert document["components"]["schemas"]["TemplateList"]["required"] == ["templates"]


def test_the_installed_package_carries_the_templates() -> None:
    # The image runs `pip install .`: billing reads its templates from the installed package.
    pyproject = tomllib.loads((TEMPLATES_DIR.parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["services.billing"]
    for path in TEMPLATES_DIR.glob("*.yaml"):
        relative = path.relative_to(TEMPLATES_DIR.parent).as_posix()
        assert any(Path(relative).match(pattern) for pattern in patterns), relative
