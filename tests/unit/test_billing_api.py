"""Billing's HTTP API on hostile input (issue 10, SPEC §12/§13): every malformed path, query or
body is a 4xx naming what is wrong, never a 5xx, and nothing reaches the service; every answer is
one the OpenAPI document declares, with the body its schema describes."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from services.billing import api, insight_api
from services.billing.app import BillingSettings, create_app
from services.billing.deps import billing_service, clock, database
from shared.contracts.invoice import Invoice, PeriodClose
from shared.domain.agreement.agreement import Agreement, parse_agreement_body
from shared.domain.agreement.fields import MAX_BODY_BYTES
from shared.domain.periods import Period
from shared.infra.auth import KeyRing
from tests.spec_example import SPEC_COMMITMENT, SPEC_SERVICE_LEVELS, SPEC_TERMS_YAML, SPEC_YAML
from tests.unit.test_agreement_bounds import json_body
from tests.unit.test_agreements import body
from tests.unit.test_insight import ACME, FakePool

ADMIN = "admin-key-0123456789abcdef"
INTAKE = "zendesk-key-1"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

INVOICE = {
    "invoice_id": "acme-2026-01-1",
    "client_id": "acme",
    "period": "2026-01",
    "period_start": "2026-01-01T00:00:00-05:00",
    "period_end": "2026-02-01T00:00:00-05:00",
    "currency": "USD",
    "agreement_version": 1,
    "tier": {"name": "Essential", "reason": "volume"},
    "usage": {"items": 0, "weighted_units": "0", "by_class": []},
    "lines": [
        {
            "kind": "tier_fee",
            "description": "Essential tier (volume)",
            "quantity": "1",
            "unit_price": "10000.00",
            "amount": "10000.00",
        }
    ],
    "total": "10000.00",
    "issued_at": "2026-02-04T05:00:00Z",
}


class FakeService:
    """Records what reaches the service layer; a test of bad input expects nothing does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stored: dict[str, Agreement] = {}

    async def put_agreement(self, agreement: Agreement) -> Agreement:
        self.calls.append(("put_agreement", agreement.client_id))
        stored = agreement.with_version(1)
        self.stored[agreement.client_id] = stored
        return stored

    async def close(self, period: Period, *, client_id: str | None, now: datetime) -> PeriodClose:
        self.calls.append(("close", (period.key, client_id)))
        return PeriodClose(
            period=period.key, invoices=(Invoice.model_validate(INVOICE),), unbilled=()
        )

    async def invoices(self, *, client_id: str | None, period: str | None) -> list[Invoice]:
        self.calls.append(("invoices", (client_id, period)))
        return [Invoice.model_validate(INVOICE)]

    async def invoice(self, invoice_id: str) -> Invoice | None:
        self.calls.append(("invoice", invoice_id))
        return Invoice.model_validate(INVOICE) if invoice_id == INVOICE["invoice_id"] else None


def billing_routes(
    service: object, pool: object, now: datetime = datetime(2026, 6, 16, tzinfo=UTC)
) -> FastAPI:
    """Billing's routers on a bare app, with the service, the pool and the clock given: what
    the lifespan would set, without starting it."""
    app = FastAPI(title="billing routes")
    app.state.keys = KeyRing(admin_key=ADMIN, intake_keys={INTAKE: "zendesk"})
    app.include_router(api.router)
    app.include_router(insight_api.router)
    app.dependency_overrides[billing_service] = lambda: service
    app.dependency_overrides[database] = lambda: pool
    app.dependency_overrides[clock] = lambda: now
    return app


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def app(service: FakeService) -> FastAPI:
    return billing_routes(service, FakePool(ACME.to_wire(), {}))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=AUTH) as http:
        yield http


def assert_documented(app: FastAPI, method: str, route: str, response: httpx.Response) -> None:
    """The status is declared for the route and the body matches its declared schema (its
    `$ref`s resolved against the document's components)."""
    document = app.openapi()
    declared = document["paths"][route][method]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{method} {route}: {status} is not documented"
    schema = declared[status]["content"]["application/json"]["schema"]
    jsonschema_rs.validate(
        {**schema, "components": document.get("components", {})}, response.json()
    )


def assert_422_at(response: httpx.Response, loc: list[Any], *words: str) -> None:
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert loc in [e["loc"] for e in errors], errors
    for word in words:
        assert any(word in e["msg"] for e in errors if e["loc"] == loc), errors


# --- path and query parameters ------------------------------------------------------------------

BAD_CLIENT_IDS = ["ACME", "a\x00b", "-acme", "a" * 65, "ac me", "é"]


@pytest.mark.parametrize("client_id", BAD_CLIENT_IDS)
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("get", "/v1/agreements/{client_id}"),
        ("put", "/v1/agreements/{client_id}"),
        ("get", "/v1/forecast/{client_id}"),
        ("get", "/v1/recommendations/{client_id}"),
    ],
)
async def test_a_bad_client_id_in_the_path_is_422_and_reaches_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    service: FakeService,
    method: str,
    route: str,
    client_id: str,
) -> None:
    url = route.replace("{client_id}", quote(client_id, safe=""))
    response = await client.request(method.upper(), url, content=json_body(body()))
    assert_422_at(response, ["path", "client_id"])
    assert_documented(app, method, route, response)
    assert service.calls == []


@pytest.mark.parametrize("period", ["0001-01", "9999-12", "1999-12", "2100-01", "2026-13", "x"])
async def test_a_period_outside_2000_to_2099_is_422_everywhere(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService, period: str
) -> None:
    close = await client.post(f"/v1/periods/{period}/close")
    assert_422_at(close, ["path", "period"])
    assert_documented(app, "post", "/v1/periods/{period}/close", close)
    listing = await client.get("/v1/invoices", params={"period": period})
    assert_422_at(listing, ["query", "period"])
    assert_documented(app, "get", "/v1/invoices", listing)
    forecast = await client.get("/v1/forecast/acme", params={"period": period})
    assert_422_at(forecast, ["query", "period"])
    assert_documented(app, "get", "/v1/forecast/{client_id}", forecast)
    assert service.calls == []


async def test_invoice_filters_are_checked(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    for client_id in ["a\x00", "", "NOPE"]:
        response = await client.get("/v1/invoices", params={"client_id": client_id})
        assert_422_at(response, ["query", "client_id"])
        assert_documented(app, "get", "/v1/invoices", response)
    assert service.calls == []
    response = await client.get("/v1/invoices", params={"client_id": "acme", "period": "2026-01"})
    assert response.status_code == 200
    assert_documented(app, "get", "/v1/invoices", response)
    assert service.calls == [("invoices", ("acme", "2026-01"))]


@pytest.mark.parametrize("invoice_id", ["a\x00b", "%00", "x" * 500, "acme-2026-01-0", "'; --"])
async def test_an_invoice_id_that_is_no_invoice_id_is_404_without_a_query(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService, invoice_id: str
) -> None:
    response = await client.get("/v1/invoices/" + quote(invoice_id, safe=""))
    assert response.status_code == 404
    assert_documented(app, "get", "/v1/invoices/{invoice_id}", response)
    assert service.calls == []


async def test_a_known_invoice(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/invoices/acme-2026-01-1")
    assert response.status_code == 200
    assert_documented(app, "get", "/v1/invoices/{invoice_id}", response)


# --- the agreement body -------------------------------------------------------------------------


async def put(client: httpx.AsyncClient, raw: bytes, media: str = "application/json") -> Any:
    return await client.put("/v1/agreements/acme", content=raw, headers={"Content-Type": media})


async def test_a_valid_agreement_json_and_yaml(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await put(client, json_body(body()))
    assert response.status_code == 200, response.text
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    response = await put(client, SPEC_YAML.encode(), "application/yaml")
    assert response.status_code == 200, response.text
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    response = await put(client, (SPEC_YAML + SPEC_TERMS_YAML).encode(), "application/yaml")
    assert response.status_code == 200, response.text
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert response.json()["service_levels"]["levels"][0]["id"] == "ap-turnaround"
    got = await client.get("/v1/agreements/acme")
    assert got.status_code == 200
    assert_documented(app, "get", "/v1/agreements/{client_id}", got)


@pytest.mark.parametrize(
    ("raw", "media", "loc", "word"),
    [
        (json_body(body()).replace(b'"complex": 5', b'"complex": 1e2000000'), "application/json",
         ["pricing", "weights", "complex"], "10^12"),
        (json_body(body(name="a\x00b")), "application/json", ["name"], "U+0000"),
        (json_body(body(name="\ud800")), "application/json", ["name"], "surrogate"),
        (json_body(body(classification={"rules": [
            {"id": "bad", "when": {"title": {"regex": r"(a)\1"}},
             "then": {"service_line": "hr", "complexity": "basic"}}]})),
         "application/json", ["classification", "rules", 0, "when", "title", "regex"], "'bad'"),
        (json_body(body(name="ACME")).replace(b"ACME", b"AC\xc3\x28ME"), "application/json",
         ["body"], "UTF-8"),
        (b"[" * 10_000, "application/json", ["body"], "nested"),
        (b"- " * 5_000 + b"x", "application/yaml", ["body"], "nested"),
        (b"{not json", "application/json", ["body"], "JSON"),
        (json_body(body(client_id="other")), "application/json", ["client_id"], "path"),
    ],
)  # fmt: skip
async def test_a_bad_agreement_is_422_naming_it(
    app: FastAPI,
    client: httpx.AsyncClient,
    service: FakeService,
    raw: bytes,
    media: str,
    loc: list[Any],
    word: str,
) -> None:
    response = await put(client, raw, media)
    assert_422_at(response, loc, word)
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert service.calls == []


async def test_a_body_over_1_mib_is_413(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    raw = json_body(body(name="x")).replace(b'"x"', b'"' + b" " * MAX_BODY_BYTES + b'"')
    response = await put(client, raw)
    assert response.status_code == 413
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(20):
            yield b" " * 65_536

    response = await client.put("/v1/agreements/acme", content=streamed())
    assert response.status_code == 413
    assert service.calls == []


async def test_an_agreement_kafka_could_not_carry_is_413_at_the_put(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    placeholder = [
        {"id": f"r{i}", "when": {"units": {"in": "X"}}, "then": {"service_line": "hr",
                                                                 "complexity": "basic"}}
        for i in range(400)
    ]  # fmt: skip
    numbers = ("[" + ",".join(["1e12"] * 300) + "]").encode()
    raw = json_body(body(classification={"rules": placeholder})).replace(b'"X"', numbers)
    assert len(raw) <= MAX_BODY_BYTES
    response = await put(client, raw)
    assert response.status_code == 413
    assert "Kafka" in response.json()["detail"]
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert service.calls == []


async def test_permission_is_decided_before_the_body_is_read(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    hostile = b"[" * 10_000
    for headers, status in [
        ({"Authorization": ""}, 401),
        ({"Authorization": f"Bearer {INTAKE}"}, 403),
    ]:
        response = await client.put("/v1/agreements/ACME%00", content=hostile, headers=headers)
        assert response.status_code == status
        assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert service.calls == []


# --- service levels and the commitment (SPEC §11, §13) -------------------------------------------

Edit = Callable[[dict[str, Any]], object]


def with_terms(edit: Edit = lambda _: None) -> bytes:
    """`body()` with §11's example sections (and the effective_from a commitment needs),
    changed by `edit`, as a JSON body."""
    data = body(
        effective_from="2026-01-01",
        service_levels=copy.deepcopy(SPEC_SERVICE_LEVELS),
        commitment=dict(SPEC_COMMITMENT),
    )
    edit(data)
    return json_body(data)


def level(data: dict[str, Any], index: int) -> dict[str, Any]:
    found: dict[str, Any] = data["service_levels"]["levels"][index]
    return found


def calendar(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = data["service_levels"]["calendar"]
    return found


LEVELS = ["service_levels", "levels"]
CALENDAR = ["service_levels", "calendar"]


@pytest.mark.parametrize(
    ("edit", "loc", "word"),
    [
        pytest.param(lambda d: level(d, 0).update(pool_percent="70"), LEVELS, "110",
                     id="pool-shares-over-100"),
        pytest.param(lambda d: d["service_levels"].pop("calendar"), [*LEVELS, 0, "clock"],
                     "calendar", id="business-clock-without-calendar"),
        pytest.param(lambda d: calendar(d).update(holidays=["2026-12-25", "2100-01-01"]),
                     [*CALENDAR, "holidays", 1], "2000-01..2099-12", id="holiday-after-2099"),
        pytest.param(lambda d: calendar(d).update(holidays=["1999-12-31"]),
                     [*CALENDAR, "holidays", 0], "2000-01..2099-12", id="holiday-before-2000"),
        pytest.param(lambda d: calendar(d).update(holidays=["2026-02-30"]),
                     [*CALENDAR, "holidays", 0], "YYYY-MM-DD", id="holiday-no-date"),
        pytest.param(lambda d: calendar(d).update(hours=["18:00", "09:00"]),
                     [*CALENDAR, "hours", 1], "after the start", id="hours-end-before-start"),
        pytest.param(lambda d: calendar(d).update(hours=["09:00", "09:00"]),
                     [*CALENDAR, "hours", 1], "after the start", id="hours-empty"),
        pytest.param(lambda d: calendar(d).update(hours=["24:00", "24:00"]),
                     [*CALENDAR, "hours", 0], "24:00", id="hours-start-at-midnight-end"),
        pytest.param(lambda d: calendar(d).update(hours=["9:00", "18:00"]),
                     [*CALENDAR, "hours", 0], "HH:MM", id="hours-not-hh-mm"),
        pytest.param(lambda d: calendar(d).update(days=["mon", "funday"]),
                     [*CALENDAR, "days"], "funday", id="unknown-day"),
        pytest.param(lambda d: calendar(d).update(days=[]),
                     [*CALENDAR, "days"], "non-empty", id="no-days"),
        pytest.param(lambda d: level(d, 0).update(complexity=["basic", "hard"]),
                     [*LEVELS, 0, "complexity"], "hard", id="unknown-complexity"),
        pytest.param(lambda d: level(d, 1).pop("service_line"),
                     [*LEVELS, 1, "service_line"], "required", id="no-service-line"),
        pytest.param(lambda d: level(d, 1).update(service_line=["customer_support", "hr"]),
                     [*LEVELS, 1, "service_line"], "exactly one", id="service-line-list"),
        pytest.param(lambda d: level(d, 1).update(service_line="legal"),
                     [*LEVELS, 1, "service_line"], "customer_support", id="unknown-service-line"),
        pytest.param(lambda d: level(d, 1).update(target_percent=90),
                     [*LEVELS, 1, "target_percent"], "decimal string", id="target-a-json-number"),
        pytest.param(lambda d: level(d, 1).update(pool_percent=40.5),
                     [*LEVELS, 1, "pool_percent"], "not the number 40.5", id="pool-a-json-number"),
        pytest.param(lambda d: d["service_levels"].update(at_risk_percent=10),
                     ["service_levels", "at_risk_percent"], "decimal string",
                     id="at-risk-a-json-number"),
        pytest.param(lambda d: level(d, 1).update(target_percent="100.5"),
                     [*LEVELS, 1, "target_percent"], "between 0 and 100", id="target-over-100"),
        pytest.param(lambda d: level(d, 1).update(pool_percent="-1"),
                     [*LEVELS, 1, "pool_percent"], "decimal string 0..100", id="pool-negative"),
        pytest.param(lambda d: level(d, 1).update(pool_percent="+5"),
                     [*LEVELS, 1, "pool_percent"], "decimal string 0..100", id="pool-signed"),
        pytest.param(lambda d: d["service_levels"].update(at_risk_percent="101"),
                     ["service_levels", "at_risk_percent"], "between 0 and 100",
                     id="at-risk-over-100"),
        pytest.param(lambda d: level(d, 1).update(target_percent="9e1"),
                     [*LEVELS, 1, "target_percent"], "decimal string", id="percent-exponent"),
        pytest.param(lambda d: level(d, 1).update(within_hours=0),
                     [*LEVELS, 1, "within_hours"], "greater than 0", id="within-hours-0"),
        pytest.param(lambda d: level(d, 1).update(within_hours="-2"),
                     [*LEVELS, 1, "within_hours"], "greater than 0", id="within-hours-negative"),
        pytest.param(lambda d: level(d, 1).update(within_hours="four"),
                     [*LEVELS, 1, "within_hours"], "'four'", id="within-hours-text"),
        pytest.param(lambda d: level(d, 0).update(clock="wall"),
                     [*LEVELS, 0, "clock"], "business", id="unknown-clock"),
        pytest.param(lambda d: level(d, 1).update(id="ap-turnaround"),
                     [*LEVELS, 1, "id"], "duplicate", id="duplicate-level-id"),
        pytest.param(lambda d: d["service_levels"].update(levels=[]),
                     LEVELS, "at least 1", id="no-levels"),
        pytest.param(lambda d: level(d, 0).update(target="95"),
                     [*LEVELS, 0, "target"], "Extra", id="unknown-level-field"),
        pytest.param(lambda d: d["commitment"].update(annual_minimum="400000.001"),
                     ["commitment", "annual_minimum"], "USD allows at most 2",
                     id="annual-minimum-sub-cent"),
        pytest.param(lambda d: d["commitment"].update(annual_minimum=400000),
                     ["commitment", "annual_minimum"], "decimal string",
                     id="annual-minimum-a-json-number"),
        pytest.param(lambda d: d.pop("effective_from"), ["commitment"], "effective_from",
                     id="commitment-without-effective-from"),
    ],
)  # fmt: skip
async def test_a_bad_service_level_or_commitment_is_422_naming_the_field(
    app: FastAPI,
    client: httpx.AsyncClient,
    service: FakeService,
    edit: Edit,
    loc: list[Any],
    word: str,
) -> None:
    response = await put(client, with_terms(edit))
    assert_422_at(response, loc, word)
    # Named the way every agreement 422 names its field: `detail` leads with the dotted path.
    assert response.json()["detail"].startswith(".".join(map(str, loc)) + ": ")
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert service.calls == []


async def test_a_yen_annual_minimum_has_whole_yen(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    def in_yen(data: dict[str, Any], minimum: str) -> None:
        data["currency"] = "JPY"
        for tier in data["pricing"]["tiers"]:
            tier["fee"] = tier["fee"].removesuffix(".00")
        data["pricing"]["overage_rate"] = "8"
        data["commitment"]["annual_minimum"] = minimum

    response = await put(client, with_terms(lambda d: in_yen(d, "400000.5")))
    assert_422_at(response, ["commitment", "annual_minimum"], "JPY allows at most 0")
    assert_documented(app, "put", "/v1/agreements/{client_id}", response)
    assert service.calls == []
    response = await put(client, with_terms(lambda d: in_yen(d, "400000")))
    assert response.status_code == 200, response.text
    assert response.json()["commitment"] == {"annual_minimum": "400000"}


@pytest.mark.parametrize(
    ("within", "shown"), [("1.5", "1.5"), (0.25, "0.25"), ("36", "36"), (2, "2")]
)
async def test_within_hours_is_a_positive_number_or_decimal_string(
    client: httpx.AsyncClient, service: FakeService, within: object, shown: str
) -> None:
    response = await put(client, with_terms(lambda d: level(d, 1).update(within_hours=within)))
    assert response.status_code == 200, response.text
    assert response.json()["service_levels"]["levels"][1]["within_hours"] == shown
    assert service.calls == [("put_agreement", "acme")]


async def test_the_sections_round_trip_through_get_and_put(service: FakeService) -> None:
    pool = FakePool(None, {})
    app = billing_routes(service, pool)
    transport = httpx.ASGITransport(app=app)

    def as_a_client_writes_it(data: dict[str, Any]) -> None:
        level(data, 0).update(complexity=["standard", "basic", "standard"], target_percent="95.0")
        level(data, 1).update(within_hours="4.50", pool_percent="40.000")
        data["service_levels"]["at_risk_percent"] = "10.00"
        calendar(data)["days"] = ["fri", "mon", "wed", "tue", "thu", "mon"]

    async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=AUTH) as http:
        put_answer = await put(http, with_terms(as_a_client_writes_it))
        assert put_answer.status_code == 200, put_answer.text
        assert_documented(app, "put", "/v1/agreements/{client_id}", put_answer)
        pool.agreement_body = service.stored["acme"].to_wire()
        got = await http.get("/v1/agreements/acme")
        assert got.status_code == 200
        assert_documented(app, "get", "/v1/agreements/{client_id}", got)
        stored = got.json()
        assert stored == put_answer.json()
        assert stored["service_levels"] == {
            "at_risk_percent": "10",
            "calendar": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "hours": ["09:00", "18:00"],
                "holidays": ["2026-12-25"],
            },
            "levels": [
                {"id": "ap-turnaround", "service_line": "accounting",
                 "complexity": ["basic", "standard"], "within_hours": "24", "clock": "business",
                 "target_percent": "95", "pool_percent": "60"},
                {"id": "care-turnaround", "service_line": "customer_support",
                 "complexity": None, "within_hours": "4.5", "clock": "elapsed",
                 "target_percent": "90", "pool_percent": "40"},
            ],
        }  # fmt: skip
        assert stored["commitment"] == {"annual_minimum": "400000.00"}

        again = await http.put("/v1/agreements/acme", content=got.content)
        assert again.status_code == 200, again.text
        assert again.json() == stored
    assert service.calls == [("put_agreement", "acme"), ("put_agreement", "acme")]


async def test_an_agreement_without_the_sections_leaves_them_out(
    client: httpx.AsyncClient,
) -> None:
    response = await put(client, json_body(body()))
    assert response.status_code == 200
    assert "service_levels" not in response.json() and "commitment" not in response.json()


# --- close body -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"client_id": "a\\u0000"}', ["body", "client_id"]),
        (b'{"client_id": 5}', ["body", "client_id"]),
        (b'{"client_id": "acme", "x": 1}', ["body"]),
        (b"[" * 10_000, ["body"]),
        (b'{"client_id": "\xff"}', ["body"]),
    ],
)
async def test_a_bad_close_body_is_422(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService, raw: bytes, loc: list[Any]
) -> None:
    response = await client.post("/v1/periods/2026-01/close", content=raw)
    assert_422_at(response, loc)
    assert_documented(app, "post", "/v1/periods/{period}/close", response)
    assert service.calls == []


async def test_close_answers_its_documented_body(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    response = await client.post("/v1/periods/2026-01/close", json={"client_id": "acme"})
    assert response.status_code == 200
    assert_documented(app, "post", "/v1/periods/{period}/close", response)
    assert service.calls == [("close", ("2026-01", "acme"))]


# --- the OpenAPI document -------------------------------------------------------------------------


def test_every_billing_route_documents_its_error_responses(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    expected = {
        ("put", "/v1/agreements/{client_id}"): {"200", "401", "403", "413", "422", "503"},
        ("get", "/v1/agreements/{client_id}"): {"200", "401", "403", "404", "422"},
        ("post", "/v1/periods/{period}/close"): {"200", "401", "403", "413", "422", "503"},
        ("get", "/v1/invoices"): {"200", "401", "403", "422"},
        ("get", "/v1/invoices/{invoice_id}"): {"200", "401", "403", "404", "422"},
        ("get", "/v1/forecast/{client_id}"): {"200", "401", "403", "404", "422"},
        ("get", "/v1/recommendations/{client_id}"): {"200", "401", "403", "404", "422"},
    }
    for (method, route), statuses in expected.items():
        assert set(paths[route][method]["responses"]) == statuses, (method, route)
    put_body = paths["/v1/agreements/{client_id}"]["put"]["requestBody"]["content"]
    assert set(put_body) == {"application/json", "application/yaml"}
    params = {p["name"]: p["schema"] for p in paths["/v1/invoices"]["get"]["parameters"]}
    assert params["period"]["pattern"].startswith("^20")
    error_bodies = [
        response["content"]["application/json"]["schema"]
        for path in paths.values()
        for operation in path.values()
        for status, response in operation["responses"].items()
        if status == "422"
    ]
    assert all("errors" in schema["required"] for schema in error_bodies)


def test_the_spec_agreement_matches_its_documented_schemas(app: FastAPI) -> None:
    schemas = app.openapi()["paths"]["/v1/agreements/{client_id}"]["put"]
    request = schemas["requestBody"]["content"]["application/json"]["schema"]
    answer = schemas["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema_rs.validate(request, json.loads(json_body(body())))
    jsonschema_rs.validate(answer, ACME.to_wire())


def test_the_documented_agreement_has_service_levels_and_a_commitment(app: FastAPI) -> None:
    schemas = app.openapi()["paths"]["/v1/agreements/{client_id}"]["put"]
    request = schemas["requestBody"]["content"]["application/json"]["schema"]
    answer = schemas["responses"]["200"]["content"]["application/json"]["schema"]
    for schema in (request, answer):
        assert {"service_levels", "commitment"} <= set(schema["properties"])
        assert not {"service_levels", "commitment"} & set(schema["required"])  # optional
    written = json.loads(with_terms())
    jsonschema_rs.validate(request, written)
    stored = parse_agreement_body(with_terms()).with_version(1).to_wire()
    jsonschema_rs.validate(answer, stored)
    documented = answer["properties"]["service_levels"]["properties"]["levels"]["items"]
    assert documented["required"] == list(stored["service_levels"]["levels"][0])
    # A percent is a decimal string in the document as in the API (SPEC §13).
    written["service_levels"]["levels"][0]["target_percent"] = 95
    assert not jsonschema_rs.is_valid(request, written)


def test_the_app_documents_every_route_and_document_before_it_starts() -> None:
    # The routers are included when the app is built, so /openapi.json is complete without
    # the lifespan (no Kafka, no database), with the documents' real schemas.
    settings = BillingSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        tierline_admin_key=ADMIN,
        tierline_intake_keys=f"zendesk={INTAKE}",
    )
    document = create_app(settings).openapi()
    routes = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert {
        ("put", "/v1/agreements/{client_id}"),
        ("get", "/v1/agreements/{client_id}"),
        ("post", "/v1/periods/{period}/close"),
        ("get", "/v1/invoices"),
        ("get", "/v1/invoices/{invoice_id}"),
        ("get", "/v1/forecast/{client_id}"),
        ("get", "/v1/recommendations/{client_id}"),
    } <= routes
    ok = document["paths"]["/v1/invoices/{invoice_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Invoice"}
    invoice = document["components"]["schemas"]["Invoice"]
    # `service_levels` is there only for an agreement with service levels (SPEC §11, §13).
    assert list(invoice["properties"]) == [*INVOICE, "service_levels"]
    assert set(invoice["required"]) == set(INVOICE)
    assert {"Forecast", "Recommendations", "PeriodClose", "InvoiceList"} <= set(
        document["components"]["schemas"]
    )
    jsonschema_rs.validate({**invoice, "components": document["components"]}, INVOICE)
