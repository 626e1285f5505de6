"""Invoice consumers read `billing.invoices` with the CloudEvents SDK (SPEC §7), as they do in
production: every event must come out of the SDK's own `from_kafka_event` as a valid structured
CloudEvent with §7's attributes and the invoice as its data."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event

from shared.contracts.invoice import InvoiceIssued
from shared.contracts.topics import INVOICES
from shared.domain.periods import period_bounds
from tests.e2e.conftest import Api
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_pipeline import last_month


async def invoice_records(bootstrap: str, keys: set[bytes], want: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        INVOICES,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [r for r in records if r.key in keys]
    finally:
        await consumer.stop()
    return found


async def test_every_invoice_event_reads_as_a_structured_cloudevent_with_the_sdk(
    api: Api, run_id: str
) -> None:
    clients = {f"ce-usd-{run_id}": "USD", f"ce-jpy-{run_id}": "JPY"}
    period = last_month()
    for client, currency in clients.items():
        fees = ("100.00", "200.00") if currency == "USD" else ("100", "200")
        response = await api.put_agreement(agreement(client, currency, "UTC", fees))
        assert response.status_code == 200, response.text
        await api.post_items(care(client, "c", 4, *period_bounds(period, "UTC")))
    stored = {}
    for client in clients:
        closed = await api.close(period.key, client)
        assert closed.status_code == 200, closed.text
        [invoice] = closed.json()["invoices"]
        stored[invoice["invoice_id"]] = invoice

    records = await invoice_records(
        api.stack.kafka_bootstrap, {c.encode() for c in clients}, len(clients)
    )
    read: dict[str, dict[str, Any]] = {}
    for record in records:
        headers = {name: value for name, value in record.headers}
        assert not any(name.lower().startswith("ce_") for name in headers)  # structured mode
        event = from_kafka_event(KafkaMessage(headers=headers, key=record.key, value=record.value))
        attributes = event.get_attributes()
        assert attributes["specversion"] == "1.0"
        assert attributes["type"] == "bpo.invoice.issued"
        assert attributes["source"] == "/tierline/billing"
        assert attributes["subject"] == record.key.decode()
        assert attributes["datacontenttype"] == "application/json"
        assert attributes["time"] is not None
        data = event.get_data()
        assert isinstance(data, dict)  # JSON data, parsed by the SDK
        read[attributes["id"]] = data
    assert read == stored  # id = invoice id, data = the invoice, every one of them
    assert {invoice["total"] for invoice in read.values()} == {"100.00", "100"}
    for record in records:  # the bytes on the topic are the contract's envelope, exactly
        issued = InvoiceIssued.model_validate_json(record.value)
        assert issued.model_dump_json().encode() == record.value
        assert issued.data.model_dump(mode="json") == stored[issued.id]
