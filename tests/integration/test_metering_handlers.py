"""Metering's handler path on a real Kafka broker and PostgreSQL: records on a topic → the hot
subscriber → decode → count in one transaction → offsets committed; the same records delivered
again (a redelivery, as after a crash before the commit) count nothing more.

The records go to a topic of this test's own, so no other test's records are consumed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry

from services.metering.handlers import Meter, MeteringMetrics
from shared.contracts.topics import WORKITEMS_CLASSIFIED
from shared.domain.agreement.agreement import parse_agreement
from shared.infra.kafka import (
    committed_offsets,
    ensure_topics,
    make_broker,
    subscribe_hot_batches,
    topic_configs,
)
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.reads import counts_between
from tests.records import AT, classified_record
from tests.spec_example import spec_agreement
from tests.topics import new_topic

ITEMS = 25
#: How long a step may take before the test gives up (a deadline for failing, not a measure).
DEADLINE_SECONDS = 60


@pytest.fixture
async def topic(kafka_bootstrap: str, kafka: KafkaConnection) -> str:
    """A one-partition topic of this test's own (configured as workitems.classified is)."""
    await ensure_topics(kafka, partitions=6)  # usage.alerts, the dead-letter topics
    return await new_topic(
        kafka_bootstrap, "metering-handler-test", configs=topic_configs(WORKITEMS_CLASSIFIED)
    )


def classified(client: str, n: int) -> bytes:
    completed_at = (AT + timedelta(minutes=n)).isoformat()
    return orjson.dumps(
        classified_record(f"item-{n}", client=client, completed_at=completed_at, units=2)
    )


@dataclass
class Run:
    """One metering consumer (its own group) on the test topic: what each batch counted."""

    registry: CollectorRegistry
    batches: list[tuple[int, int]] = field(default_factory=list)  # (records, counted)
    seen: asyncio.Event = field(default_factory=asyncio.Event)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def consume_all(
    bootstrap: str, pool: asyncpg.Pool, topic: str, client: str, *, group: str
) -> Run:
    """Runs metering's handler behind the hot subscriber until it has handled every record of
    `topic`, and until its group has committed them."""
    registry = CollectorRegistry()
    run = Run(registry)
    broker = make_broker(
        KafkaConnection.plaintext(bootstrap), client_id="metering-handler-test", registry=registry
    )
    meter = Meter(
        broker,
        pool,
        {client: parse_agreement(spec_agreement(client)).with_version(1)},
        MeteringMetrics(registry),
    )

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> Any:
        counted = await meter.handle(records)
        run.batches.append((len(records), len(counted)))
        if sum(n for n, _ in run.batches) >= ITEMS:
            run.seen.set()
        return counted

    subscribe_hot_batches(
        broker,
        topic,
        group_id=group,
        max_records=1000,
        batch_timeout_ms=50,
        handle=handle,
        title="meter",
        description="under test",
    )
    await broker.start()
    try:
        await asyncio.wait_for(run.seen.wait(), DEADLINE_SECONDS)
        await committed(bootstrap, group, ITEMS)
    finally:
        await broker.stop()
    return run


async def committed(bootstrap: str, group: str, offset: int) -> None:
    """Returns once `group` has committed up to `offset` (the offsets commit after the batch's
    transaction)."""
    async with asyncio.timeout(DEADLINE_SECONDS):
        while True:
            if (
                sum((await committed_offsets(KafkaConnection.plaintext(bootstrap), group)).values())
                >= offset
            ):
                return
            await asyncio.sleep(0.1)


async def ledger(pool: asyncpg.Pool, client: str) -> tuple[int, int, int]:
    """(items, units, rows in metering.items) of the client in October 2026."""
    counts = await counts_between(pool, client, AT - timedelta(days=4), AT + timedelta(days=26))
    rows = await pool.fetchval("SELECT count(*) FROM metering.items WHERE client_id = $1", client)
    return sum(c.items for c in counts), sum(c.units for c in counts), rows


async def test_a_batch_is_counted_once_and_a_redelivery_counts_nothing_more(
    kafka_bootstrap: str, pool: asyncpg.Pool, topic: str
) -> None:
    client = f"handler-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for n in range(ITEMS):
            assert batch.append(key=client.encode(), value=classified(client, n), timestamp=None)
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()

    first = await consume_all(kafka_bootstrap, pool, topic, client, group=f"g1-{client}")
    assert sum(counted for _, counted in first.batches) == ITEMS
    assert await ledger(pool, client) == (ITEMS, 2 * ITEMS, ITEMS)
    assert first.metric("tierline_metering_items_total", service_line="customer_support") == ITEMS
    assert first.metric("tierline_metering_duplicates_total") == 0

    # The same records, the same offsets, delivered again to a consumer that has not committed
    # them: exactly what a crash between the transaction and the offset commit leads to.
    again = await consume_all(kafka_bootstrap, pool, topic, client, group=f"g2-{client}")
    assert sum(records for records, _ in again.batches) == ITEMS
    assert sum(counted for _, counted in again.batches) == 0
    assert await ledger(pool, client) == (ITEMS, 2 * ITEMS, ITEMS)
    assert again.metric("tierline_metering_duplicates_total") == ITEMS
