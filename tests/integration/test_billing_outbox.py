"""Billing's outbox on a real Kafka and PostgreSQL (issue 10 points 5 and 8): an invoice Kafka
refuses and an agreement stored before today's bounds stop neither the other clients' invoices
nor their agreements, nor billing's start; the invoices on the topic are CloudEvents the SDK
reads."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event
from prometheus_client import CollectorRegistry

from services.billing import store
from services.billing.close_decision import Close
from services.billing.service import BillingMetrics, BillingService
from shared.contracts.invoice import Invoice
from shared.contracts.topics import AGREEMENTS, INVOICES
from shared.domain.agreement.agreement import parse_agreement
from shared.infra.kafka import CompactedView, ensure_topics, make_broker
from shared.infra.kafka_connection import KafkaConnection
from tests.unit.test_agreements import body
from tests.unit.test_billing_api import INVOICE


def invoice(client_id: str, description: str = "Essential tier (volume)") -> dict[str, Any]:
    line = {**INVOICE["lines"][0], "description": description}  # type: ignore[index]
    return {**INVOICE, "client_id": client_id, "invoice_id": f"{client_id}-2026-01-1",
            "lines": [line]}  # fmt: skip


async def insert_invoice(pool: asyncpg.Pool, doc: dict[str, Any], issued_at: datetime) -> None:
    """An invoice in billing's outbox, not yet published, written as billing's close writes it."""
    invoice = Invoice.model_validate(doc)
    close = Close(client_id=invoice.client_id, period=invoice.period, items=0, invoice=invoice)
    async with pool.acquire() as conn:
        await store.record_close(conn, close, issued_at)


@contextlib.asynccontextmanager
async def billing_service(
    pool: asyncpg.Pool,
    bootstrap: str,
    client_id: str,
    registry: CollectorRegistry,
    *,
    barrier_timeout: float = 5,
    close_concurrency: int = 1,
) -> AsyncIterator[BillingService]:
    """Billing's service on a started broker of its own (stopped at the end)."""
    broker = make_broker(
        KafkaConnection.plaintext(bootstrap), client_id=client_id, registry=registry
    )
    await broker.start()
    try:
        yield BillingService(
            pool=pool,
            broker=broker,
            kafka=KafkaConnection.plaintext(bootstrap),
            barrier_timeout=barrier_timeout,
            metrics=BillingMetrics(registry),
            close_concurrency=close_concurrency,
        )
    finally:
        await broker.stop()


async def read_topic(bootstrap: str, topic: str, keys: set[bytes]) -> dict[bytes, Any]:
    """The last record of `topic` under each of `keys`, reading to the end of the topic."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: dict[bytes, Any] = {}
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=1_000)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                found.update({r.key: r for r in records if r.key in keys})
    finally:
        await consumer.stop()
    return found


async def test_a_refused_invoice_and_an_invalid_agreement_stop_no_one(
    pool: asyncpg.Pool, kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    await ensure_topics(kafka, partitions=6)
    tag = uuid.uuid4().hex[:6]
    big, ok, ok2, legacy = (f"{name}-{tag}" for name in ("big", "ok", "ok2", "legacy"))
    issued = datetime(2026, 2, 4, 5, tzinfo=UTC)

    # Issue 10's agreement: a 13-byte weight stored, before the bounds, as two million digits.
    poison = parse_agreement(body(client_id=legacy)).with_version(1).to_wire()
    poison["pricing"]["weights"]["complex"] = "1" + "0" * 2_000_000
    await pool.execute(
        "INSERT INTO billing.agreements (client_id, version, body) VALUES ($1, 1, $2)",
        legacy,
        poison,
    )
    good = parse_agreement(body(client_id=ok)).with_version(1)
    await pool.execute(
        "INSERT INTO billing.agreements (client_id, version, body) VALUES ($1, 1, $2)",
        ok,
        good.to_wire(),
    )
    # The oldest invoice is one Kafka cannot carry (2 MB); the others follow it.
    await insert_invoice(pool, invoice(big, "x" * 2_000_000), issued)
    await insert_invoice(pool, invoice(ok), issued + timedelta(seconds=1))
    await insert_invoice(pool, invoice(ok2), issued + timedelta(seconds=2))

    registry = CollectorRegistry()
    async with billing_service(pool, kafka_bootstrap, f"outbox-{tag}", registry) as service:
        await service.publish_outbox()  # what billing's start does: it must not raise
        await service.publish_outbox()  # nor loop on the refused rows

    published = {
        r["invoice_id"]: r["published"]
        for r in await pool.fetch(
            "SELECT invoice_id, published FROM billing.invoices WHERE client_id = ANY($1)",
            [big, ok, ok2],
        )
    }
    assert published == {f"{big}-2026-01-1": False, f"{ok}-2026-01-1": True,
                          f"{ok2}-2026-01-1": True}  # fmt: skip
    agreements = {
        r["client_id"]: r["published"]
        for r in await pool.fetch(
            "SELECT client_id, published FROM billing.agreements WHERE client_id = ANY($1)",
            [legacy, ok],
        )
    }
    assert agreements == {legacy: False, ok: True}
    refused = registry.get_sample_value(
        "tierline_billing_outbox_refused_total",
        {"topic": INVOICES, "error_type": "MessageSizeTooLargeError"},
    )
    assert refused == 1

    # The rest of billing reads around the invalid version too.
    current = await store.current_agreements(pool)
    assert ok in current
    assert legacy not in current

    records = await read_topic(kafka_bootstrap, INVOICES, {ok.encode(), ok2.encode()})
    for client in (ok, ok2):
        record = records[client.encode()]
        assert not [name for name, _ in record.headers if name.lower().startswith("ce_")]
        event = from_kafka_event(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert event.get_id() == f"{client}-2026-01-1"
        assert event.get_subject() == client
        assert event.get_data() == invoice(client)
    [agreement] = (await read_topic(kafka_bootstrap, AGREEMENTS, {ok.encode()})).values()
    assert orjson.loads(agreement.value) == good.to_wire()


async def test_an_agreement_the_topic_no_longer_carries_is_republished(
    pool: asyncpg.Pool, kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    """A record written under a client's key by someone else is refused by every consumer, but
    compaction would keep only it: billing puts the real agreement back on the topic."""
    await ensure_topics(kafka, partitions=6)
    tag = uuid.uuid4().hex[:6]
    victim, untouched = f"victim-{tag}", f"untouched-{tag}"
    registry = CollectorRegistry()
    on_topic: CompactedView[bytes] = CompactedView(kafka, AGREEMENTS, bytes)
    async with billing_service(pool, kafka_bootstrap, f"reconcile-{tag}", registry) as service:
        broker = service.broker
        for client in (victim, untouched):
            await service.put_agreement(parse_agreement(body(client_id=client)))
        real = await store.current_agreement(pool, victim)
        assert real is not None
        forged = {**real.to_wire(), "client_id": "someone-else"}
        await broker.publish(orjson.dumps(forged), AGREEMENTS, key=victim.encode())
        await broker.publish(b"garbage", AGREEMENTS, key=untouched.encode())
        await on_topic.start()
        try:
            assert await service.reconcile_agreements(on_topic) >= 2
            assert await service.reconcile_agreements(on_topic) == 0  # carried now: nothing to do
        finally:
            await on_topic.stop()
    latest = await read_topic(kafka_bootstrap, AGREEMENTS, {victim.encode(), untouched.encode()})
    for client in (victim, untouched):
        record = latest[client.encode()]
        assert orjson.loads(record.value)["client_id"] == client
        assert orjson.loads(record.value)["version"] == 1
