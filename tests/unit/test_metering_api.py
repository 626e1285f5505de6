"""Metering's usage endpoint answers a malformed client id or period with a 422 naming the
parameter, before it touches the database (so none is needed here)."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.metering.api import Ledger, checked_period, router
from shared.infra.auth import KeyRing
from shared.infra.http import add_operational_routes, set_state

ADMIN = "admin-key-0123456789abcdef"


class NoAgreements:
    def get(self, client_id: str) -> None:
        return None


class NoDatabase:
    """Any query fails the test: bad input must be answered before the database is asked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name}) for a bad request")


async def healthy() -> dict[str, Any]:
    return {}


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = FastAPI()
    app.state.keys = KeyRing(admin_keys=[ADMIN], intake_keys={"intake-key": "jira"})
    app.include_router(router)
    set_state(app, Ledger(cast(Any, NoDatabase()), NoAgreements()))
    add_operational_routes(app, registry=CollectorRegistry(), health=healthy)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/usage/acme%00",
        "/v1/usage/%00",
        "/v1/usage/Acme",
        "/v1/usage/-acme",
        "/v1/usage/" + "a" * 65,
        "/v1/usage/ac%20me",
    ],
)
async def test_a_malformed_client_id_is_422_naming_it(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"period": "2026-10"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "client_id"]


@pytest.mark.parametrize(
    "period",
    [
        "9999-12",
        "0001-01",
        "1999-12",
        "2100-01",
        "2026-13",
        "2026-00",
        "2026-1",
        "2026-10\x00",
        "٢٠٢٦-١٠",
        "",
        "2026-10 ",
    ],
)
async def test_a_malformed_period_is_422_naming_it(client: httpx.AsyncClient, period: str) -> None:
    response = await client.get("/v1/usage/acme", params={"period": period})
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["loc"] == ["query", "period"]


def test_the_period_range_is_2000_01_to_2099_12() -> None:
    assert checked_period("2000-01").key == "2000-01"
    assert checked_period("2099-12").key == "2099-12"
    for outside in ("1999-12", "2100-01"):
        with pytest.raises(ValueError, match=r"outside 2000-01\.\.2099-12"):
            checked_period(outside)


async def test_the_usage_route_documents_its_parameters_and_answers(
    client: httpx.AsyncClient,
) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/usage/{client_id}"]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert "pattern" in parameters["client_id"]
    assert {"401", "403", "408", "413", "422"} <= set(operation["responses"])


@pytest.mark.parametrize("period", ["2026-13", "1999-12", "2100-01", "2026-1", "", "soon"])
async def test_a_malformed_service_level_period_is_422_naming_it(
    client: httpx.AsyncClient, period: str
) -> None:
    response = await client.get("/v1/service-levels/acme", params={"period": period})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "period"]


async def test_the_service_level_period_is_required(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/service-levels/acme")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "period"]


async def test_a_malformed_client_id_of_the_service_levels_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/service-levels/Acme", params={"period": "2026-10"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "client_id"]


async def test_the_service_levels_route_documents_its_parameters_and_answers(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/service-levels/{client_id}"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["period"]["required"] is True
    assert "pattern" in parameters["client_id"]["schema"]
    assert {"200", "401", "403", "408", "413", "422"} <= set(operation["responses"])
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ServiceLevelsReport"}
    report = document["components"]["schemas"]["ServiceLevelsReport"]
    assert list(report["properties"]) == ["client_id", "period", "service_levels"]
    level = document["components"]["schemas"]["ServiceLevelReport"]
    assert list(level["properties"]) == [
        "id",
        "measured",
        "met",
        "attainment_percent",
        "target_percent",
        "missed",
    ]
