"""A small operations workload for the console and metrics tests: one client with an agreement,
last month's work closed into an invoice with two lines, this month's work still open, and one
record that breaks the contract (so a dead letter exists)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.contracts.topics import WORKITEMS_COMPLETED
from shared.domain.periods import Period, period_bounds, period_of
from tests.e2e.conftest import Api
from tests.spec_example import spec_agreement

TZ = "America/New_York"


@dataclass(frozen=True)
class Workload:
    client_id: str
    closed_period: Period
    open_period: Period
    items_last_month: int
    items_this_month: int
    invoice: dict[str, Any]
    poison_key: str


def spread(
    client_id: str,
    prefix: str,
    count: int,
    start: datetime,
    end: datetime,
    **fields: Any,
) -> list[dict[str, Any]]:
    step = (end - start) / (count + 1)
    return [
        {
            "id": f"{prefix}-{n}",
            "client_id": client_id,
            "source": "zendesk",
            "completed_at": (start + step * (n + 1)).isoformat(),
            **fields,
        }
        for n in range(count)
    ]


async def run_workload(api: Api, client_id: str) -> Workload:
    """Agreement → last month's items → this month's items → a poison record → close last month.

    Last month lands in Professional by scope (12 complex IT-desk items ≥ min_items 10) with an
    out-of-scope line for 3 complex accounting items: total 35000.00 + 15 × 12.00 = 35180.00.
    """
    response = await api.put_agreement(spec_agreement(client_id))
    assert response.status_code == 200, response.text
    now = datetime.now(UTC)
    open_period = period_of(now, TZ)
    closed_period = open_period.previous()
    start, end = period_bounds(closed_period, TZ)
    last_month = [
        *spread(client_id, "care", 120, start, end, queue="Customer Care"),
        *spread(client_id, "keying", 30, start, end, queue="Data Entry"),
        *spread(client_id, "desk", 12, start, end, queue="IT Desk"),
        *spread(client_id, "ap", 3, start, end, queue="AP Invoices", handling_seconds=4000),
    ]
    open_start, _ = period_bounds(open_period, TZ)
    until = now - timedelta(minutes=1)
    this_month = [
        *spread(client_id, "now-care", 200, open_start, until, queue="Customer Care"),
        *spread(client_id, "now-keying", 40, open_start, until, queue="Data Entry"),
        *spread(client_id, "now-desk", 9, open_start, until, queue="IT Desk"),
    ]
    assert await api.post_items(last_month + this_month) == len(last_month) + len(this_month)
    poison_key = f"{client_id}-poison"
    producer = AIOKafkaProducer(bootstrap_servers=api.stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            WORKITEMS_COMPLETED, b'{"id": 42, "not": "a work item"}', key=poison_key.encode()
        )
    finally:
        await producer.stop()
    closed = await api.close(closed_period.key, client_id)
    assert closed.status_code == 200, closed.text
    (invoice,) = closed.json()["invoices"]
    assert invoice["total"] == "35180.00", invoice
    assert [line["kind"] for line in invoice["lines"]] == ["tier_fee", "out_of_scope"]
    return Workload(
        client_id=client_id,
        closed_period=closed_period,
        open_period=open_period,
        items_last_month=len(last_month),
        items_this_month=len(this_month),
        invoice=invoice,
        poison_key=poison_key,
    )
