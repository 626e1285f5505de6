"""`GET /v1/forecast/{client_id}` on a real PostgreSQL with service levels and a commitment (SPEC
§8, §11): the level counts come from the ledger's items, the year's spend from the periods billing
closed (their service credits left out), and the answer is the documented one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.billing import insight_api, store
from services.billing.closing import close_for_client
from services.billing.deps import clock, database
from services.metering import store as metering_store
from services.metering.counting import MeteredItem
from shared.domain.agreement.agreement import parse_agreement
from shared.domain.periods import parse_period
from shared.infra.auth import KeyRing
from tests.asgi import asgi_client
from tests.spec_example import spec_body
from tests.unit.test_billing_api import ADMIN, assert_documented

#: Halfway through June 2026 (the agreement's periods are UTC months).
NOW = datetime(2026, 6, 16, tzinfo=UTC)


def items(client: str, period: str, met: int, missed: int) -> list[MeteredItem]:
    """Customer care items of `period`, one an hour: `met` turned around in an hour, `missed`
    in ten (the care level allows four)."""
    start = datetime.fromisoformat(f"{period}-01T00:00:00+00:00")
    turnaround = [timedelta(hours=1)] * met + [timedelta(hours=10)] * missed
    return [
        MeteredItem(
            client,
            f"{period}-{k}",
            start + timedelta(hours=10 + k),
            "customer_support",
            "basic",
            1,
            60,
            "cs",
            1,
            opened_at=start + timedelta(hours=10 + k) - took,
        )
        for k, took in enumerate(turnaround)
    ]


@pytest.fixture
async def client_id(pool: asyncpg.Pool) -> str:
    """A client on SPEC §3's agreement in UTC with a care level (90 % within 4 hours, 40 % of a
    10 % pool) and an annual minimum of 400000.00; January and February 2026 closed."""
    client = f"insight-{uuid.uuid4().hex[:6]}"
    body = {
        **spec_body(client),
        "timezone": "UTC",
        "service_levels": {
            "at_risk_percent": "10",
            "levels": [
                {"id": "care-turnaround", "service_line": "customer_support",
                 "within_hours": 4, "target_percent": "90", "pool_percent": "40"},
            ],
        },
        "commitment": {"annual_minimum": "400000.00"},
    }  # fmt: skip
    async with pool.acquire() as conn:
        await store.store_agreement(conn, parse_agreement(body))
    batch = [
        *items(client, "2026-01", met=10, missed=0),  # met: 10000.00
        *items(client, "2026-02", met=5, missed=5),  # missed: 10000.00 - 400.00 credit
        *items(client, "2026-06", met=15, missed=5),  # 75 % so far: missed
    ]
    async with pool.acquire() as conn, conn.transaction():
        await metering_store.count(conn, batch, timezone_of=lambda _: "UTC")
    for period in ("2026-01", "2026-02"):
        async with pool.acquire() as conn:
            await close_for_client(
                conn, client_id=client, period=parse_period(period), now=NOW - timedelta(days=1)
            )
    return client


@pytest.fixture
async def http(pool: asyncpg.Pool) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = FastAPI()
    app.state.keys = KeyRing(admin_key=ADMIN, intake_keys={})
    app.include_router(insight_api.router)
    app.dependency_overrides[database] = lambda: pool
    app.dependency_overrides[clock] = lambda: NOW
    async with asgi_client(app, ADMIN) as c:
        yield app, c


async def test_the_forecast_shows_the_service_levels_and_the_commitment(
    pool: asyncpg.Pool, client_id: str, http: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, client = http
    response = await client.get(f"/v1/forecast/{client_id}")
    assert response.status_code == 200, response.text
    assert_documented(app, "get", "/v1/forecast/{client_id}", response)
    body = response.json()
    assert body["period"] == "2026-06"
    # June so far: 20 items (W 20, Essential), 15 of them within 4 hours: 75 % < 90 %.
    assert body["service_levels"] == [
        {"id": "care-turnaround", "measured": 20, "met": 15, "attainment_percent": "75.00",
         "target_percent": "90", "missed": True},
    ]  # fmt: skip
    # Projected to 40 items, still Essential: 10000.00 less the 400.00 credit.
    assert body["projected"]["total"] == "9600.00"
    assert [(line["kind"], line["amount"]) for line in body["projected"]["lines"]] == [
        ("tier_fee", "10000.00"),
        ("service_credit", "-400.00"),
    ]
    # Closed: January 10000.00 and February 9600.00 billed with -400.00 credits: spend
    # 20000.00. June's spend leaves its credit out: 10000.00, and so do the 9 periods not
    # closed (March .. May, July .. December): 20000 + 10 × 10000 = 120000.00, 280000.00
    # short of the minimum.
    assert body["commitment"] == {
        "annual_minimum": "400000.00",
        "year": "2026-01..2026-12",
        "year_end_period": "2026-12",
        "spend_so_far": "20000.00",
        "closed_periods": 2,
        "period_spend": "10000.00",
        "remaining_periods": 9,
        "projected_spend": "120000.00",
        "projected_true_up": "280000.00",
    }


async def test_february_was_billed_with_its_credit(pool: asyncpg.Pool, client_id: str) -> None:
    # What the forecast's spend_so_far reads: billing.closed_periods' billed_total and credits.
    billed = await store.billed_periods(pool, client_id, ["2026-01", "2026-02", "2026-03"])
    assert {key: (str(b.billed_total), str(b.credits)) for key, b in billed.items()} == {
        "2026-01": ("10000.00", "0.00"),
        "2026-02": ("9600.00", "-400.00"),
    }


async def test_recommendations_weigh_the_commitment(
    client_id: str, http: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, client = http
    response = await client.get(f"/v1/recommendations/{client_id}")
    assert response.status_code == 200, response.text
    assert_documented(app, "get", "/v1/recommendations/{client_id}", response)
    # January and February re-rated without credits: 10000.00 each, under their share of the
    # minimum, 400000 × 2 / 12 = 66666.67, which is what they cost whatever the change.
    options = response.json()["options"]
    assert [(o["change"], o["total_before"], o["saving"]) for o in options] == [
        ("mode", "66666.67", "0.00"),
        ("tier", "66666.67", "0.00"),
    ]
    assert options[0]["commitment"] == [
        {"year": "2026-01..2026-12", "periods": 2, "minimum": "66666.67",
         "spend_before": "20000.00", "spend_after": "20000.00",
         "cost_before": "66666.67", "cost_after": "66666.67"},
    ]  # fmt: skip
