"""Billing's close use case (`BillingService.close`) on a real Kafka and PostgreSQL: the barrier,
each client's close, the outbox, and the answer of SPEC §6 — for one client and for every client.

Periods of 2031 are this module's alone: closing "every client" closes that period for every
client of the session's database, which no other test meters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from services.billing import store
from services.billing.service import BillingService
from services.metering import store as metering_store
from services.metering.counting import MeteredItem
from shared.domain.agreement.agreement import parse_agreement
from shared.domain.periods import Period, parse_period, period_bounds
from shared.infra.kafka import ensure_topics
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.locks import lock_for_close
from tests.integration.test_billing_outbox import billing_service
from tests.spec_example import spec_body

NOW = datetime(2031, 6, 1, tzinfo=UTC)


@pytest.fixture
async def billing(
    pool: asyncpg.Pool, kafka_bootstrap: str, kafka: KafkaConnection
) -> AsyncIterator[BillingService]:
    await ensure_topics(kafka, partitions=6)
    client_id = f"close-{uuid.uuid4().hex[:6]}"
    async with billing_service(
        pool, kafka_bootstrap, client_id, CollectorRegistry(), barrier_timeout=10
    ) as service:
        yield service


async def put_agreement(pool: asyncpg.Pool, client: str) -> None:
    async with pool.acquire() as conn:
        await store.store_agreement(conn, parse_agreement({**spec_body(client), "timezone": "UTC"}))


async def meter(pool: asyncpg.Pool, client: str, period: Period, n: int) -> None:
    start, _ = period_bounds(period, "UTC")
    batch = [
        MeteredItem(client, f"s-{k}", start + timedelta(hours=k), "hr", "basic", 1, 60, "r", 1)
        for k in range(n)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await metering_store.count(conn, batch, timezone_of=lambda _: "UTC")


def closed(billing: BillingService, outcome: str) -> float:
    """`tierline_billing_periods_closed_total{outcome=...}` of this service."""
    [metric] = billing.metrics.periods_closed.collect()
    return sum(
        s.value
        for s in metric.samples
        if s.name.endswith("_total") and s.labels == {"outcome": outcome}
    )


async def test_closing_one_client_answers_and_publishes_its_invoice_once(
    pool: asyncpg.Pool, billing: BillingService
) -> None:
    client = f"svc-{uuid.uuid4().hex[:6]}"
    period = parse_period("2031-03")
    await put_agreement(pool, client)
    await meter(pool, client, period, 12)

    answer = (await billing.close(period, client_id=client, now=NOW)).model_dump(mode="json")
    assert answer["period"] == "2031-03" and answer["unbilled"] == []
    [invoice] = answer["invoices"]
    assert (invoice["invoice_id"], invoice["total"]) == (f"{client}-2031-03-1", "35000.00")
    # its invoice went out (the database is the session's: other tests leave refused rows behind)
    assert [i for i, _ in await store.unpublished_invoices(pool) if i.startswith(client)] == []
    assert closed(billing, "invoiced") == 1

    again = await billing.close(period, client_id=client, now=NOW)
    assert again.model_dump(mode="json") == answer
    assert closed(billing, "invoiced") == 1  # nothing new closed


async def test_closing_every_client_invoices_those_in_force_and_lists_the_unbilled(
    pool: asyncpg.Pool, billing: BillingService
) -> None:
    tag = uuid.uuid4().hex[:6]
    billed, unbilled, idle = f"svc-billed-{tag}", f"svc-unbilled-{tag}", f"svc-idle-{tag}"
    period = parse_period("2031-04")
    await put_agreement(pool, billed)
    await put_agreement(pool, idle)  # an agreement and no items: owes the first tier's fee
    await meter(pool, billed, period, 3)
    await meter(pool, unbilled, period, 4)

    answer = (await billing.close(period, client_id=None, now=NOW)).model_dump(mode="json")
    ours = {i["client_id"]: i["total"] for i in answer["invoices"] if tag in i["client_id"]}
    # 3 hr/basic items: Essential (too few to change the tier), hr out of its scope: 3 × 12.00.
    assert ours == {billed: "10036.00", idle: "10000.00"}
    assert [u for u in answer["unbilled"] if tag in u["client_id"]] == [
        {"client_id": unbilled, "items": 4}
    ]


async def test_a_client_whose_close_waits_does_not_hold_up_the_others(
    pool: asyncpg.Pool, kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    """Closing every client works on several at once: while one client's close waits for its
    lock (held here, as a long metering batch of that client would), the next client in the
    order closes. One at a time, the second would wait behind the first."""
    await ensure_topics(kafka, partitions=6)
    tag = uuid.uuid4().hex[:6]
    waits, goes_on = f"svc-{tag}-a", f"svc-{tag}-b"  # in this order
    period = parse_period("2031-05")
    for client in (waits, goes_on):
        await put_agreement(pool, client)
        await meter(pool, client, period, 2)
    async with billing_service(
        pool, kafka_bootstrap, tag, CollectorRegistry(), barrier_timeout=10, close_concurrency=2
    ) as billing:
        holder = await pool.acquire()
        transaction = holder.transaction()
        await transaction.start()
        try:
            await lock_for_close(holder, waits)
            closing = asyncio.create_task(billing.close(period, client_id=None, now=NOW))
            async with asyncio.timeout(30):
                while True:
                    if await closed_for(pool, goes_on, period) is not None:
                        break
                    await asyncio.sleep(0.1)
            assert await closed_for(pool, waits, period) is None
            assert not closing.done()
        finally:
            await transaction.rollback()
            await pool.release(holder)
        answer = (await closing).model_dump(mode="json")
    ours = sorted(i["client_id"] for i in answer["invoices"] if tag in i["client_id"])
    assert ours == [waits, goes_on]


async def closed_for(pool: asyncpg.Pool, client: str, period: Period) -> str | None:
    invoice: str | None = await pool.fetchval(
        "SELECT invoice_id FROM billing.closed_periods WHERE client_id = $1 AND period = $2",
        client,
        period.key,
    )
    return invoice
