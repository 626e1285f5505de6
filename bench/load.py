"""The workload and how it is driven: agreements, pre-serialised requests posted to intake, and
the wait until every accepted item is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import orjson

from bench.common import CLIENTS, CONCURRENCY, REQUEST_ITEMS
from services.billing.barrier import wait_until_metered
from shared.domain.periods import Period, period_bounds
from tools.supervisor import Stack
from tools.workload import stream_items

#: Three service levels (SPEC §11) of the kinds a BPO signs: business hours on two lines, elapsed
#: hours on a third, for `tierline bench --service-levels`.
SERVICE_LEVELS: dict[str, Any] = {
    "at_risk_percent": "10",
    "calendar": {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "hours": ["09:00", "18:00"],
        "holidays": ["2026-01-01", "2026-12-25"],
    },
    "levels": [
        {"id": "care", "service_line": "customer_support", "within_hours": 8,
         "clock": "business", "target_percent": "90", "pool_percent": "40"},
        {"id": "ap", "service_line": "accounting", "complexity": ["basic", "standard"],
         "within_hours": 18, "clock": "business", "target_percent": "95", "pool_percent": "40"},
        {"id": "it", "service_line": "it_support", "within_hours": 24,
         "target_percent": "80", "pool_percent": "20"},
    ],
}  # fmt: skip


def agreement(client: str, *, service_levels: bool = False) -> dict[str, Any]:
    body = _agreement(client)
    if service_levels:
        body["service_levels"] = SERVICE_LEVELS
    return body


def _agreement(client: str) -> dict[str, Any]:
    return {
        "client_id": client,
        "currency": "USD",
        "timezone": "UTC",
        "effective_from": "2026-01-01",
        "pricing": {
            "weights": {"basic": 1, "standard": 2, "complex": 5},
            "unit_basis": {"data_entry": "units"},
            "tiers": [
                {
                    "name": "Essential",
                    "up_to": 20000,
                    "fee": "10000.00",
                    "scope": {"customer_support": "all", "data_entry": "all"},
                },
                {"name": "Professional", "up_to": 100000, "fee": "35000.00"},
                {"name": "Enterprise", "up_to": 500000, "fee": "90000.00"},
            ],
            "overage_rate": "0.50",
            "scope_policy": {"mode": "upgrade", "min_items": 50, "out_of_scope_rate": "1.00"},
        },
    }


def request_bodies(
    prefix: str, count: int, period: Period, *, seed: int, opened: bool = False
) -> tuple[list[bytes], int]:
    """Pre-serialized request bodies (so the load generator spends nothing per item)."""
    start, end = period_bounds(period, "UTC")
    clients = [f"{prefix}{n}" for n in range(CLIENTS)]
    bodies, batch, unique = [], [], set()
    stream = stream_items(
        clients, start, end, count, seed=seed, duplicate_ratio=0.10, opened=opened
    )
    for generated in stream:
        item = {**generated, "id": f"{prefix}{generated['id']}"}  # a re-sent copy is one object
        unique.add((item["client_id"], item["id"]))
        batch.append(item)
        if len(batch) == REQUEST_ITEMS:
            bodies.append(orjson.dumps(batch))
            batch = []
    if batch:
        bodies.append(orjson.dumps(batch))
    return bodies, len(unique)


# --- driving intake --------------------------------------------------------------------------


async def post_all(http: httpx.AsyncClient, url: str, key: str, bodies: list[bytes]) -> int:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await http.post(url, content=body, headers=headers)
                if response.status_code == 202:
                    accepted += response.json()["accepted"]
                    break
                await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return accepted


async def counted(pool: asyncpg.Pool, prefix: str) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM metering.items WHERE client_id LIKE $1", f"{prefix}%"
    )
    return int(value)


async def wait_counted(
    stack: Stack, pool: asyncpg.Pool, prefix: str, unique: int, timeout: float
) -> float:
    """When every accepted item is counted, found by asking Kafka, not the database: once both
    consumer groups have committed past the topics' end offsets (the close's completeness
    barrier) every item accepted so far is in PostgreSQL. Polling `count(*)` instead would put
    a scan of the whole ledger on the machine being measured. One exact count confirms it."""
    await wait_until_metered(stack.kafka, timeout=timeout)
    done = time.monotonic()
    found = await counted(pool, prefix)
    if found < unique:
        raise AssertionError(f"only {found} of {unique} counted")
    return done
