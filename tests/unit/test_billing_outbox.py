"""Billing's outbox publishes each row on its own (issue 10 point 5, SPEC §12): a row Kafka
refuses is logged, counted and held back while every other agreement and invoice goes out; an
outage ends the pass quietly and the next pass retries; invoice events are CloudEvents in
structured mode that the SDK's `from_kafka_event` reads (point 8)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.billing import service as service_module
from services.billing.service import (
    BillingMetrics,
    BillingService,
    KafkaUnavailable,
    is_transient,
)
from shared.contracts.invoice import Invoice
from shared.contracts.reclassification import Note, adjustment_line
from shared.contracts.topics import AGREEMENTS, INVOICES
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.infra.kafka_connection import KafkaConnection
from tests.unit.test_agreements import body
from tests.unit.test_billing_api import INVOICE


def invoice(client_id: str, period: str = "2026-01") -> dict[str, Any]:
    return {**INVOICE, "client_id": client_id, "invoice_id": f"{client_id}-{period}-1"}


def agreement(client_id: str, version: int) -> Agreement:
    return parse_agreement(body(client_id=client_id)).with_version(version)


class FakeStore:
    """The outbox rows of billing's store, in memory."""

    def __init__(
        self,
        agreements: Iterable[tuple[str, int, Agreement | None]] = (),
        invoices: Iterable[dict[str, Any]] = (),
        notes: Iterable[Note] = (),
    ) -> None:
        self.agreements = list(agreements)
        self.notes = list(notes)
        self.published_notes: list[str] = []
        self.invoices = {i["invoice_id"]: i for i in invoices}
        self.published_agreements: list[tuple[str, int]] = []
        self.published_invoices: list[str] = []

    async def unpublished_agreements(self, _: Any) -> list[tuple[str, int, Agreement | None]]:
        done = set(self.published_agreements)
        return [row for row in self.agreements if (row[0], row[1]) not in done]

    async def mark_agreement_published(self, _: Any, client_id: str, version: int) -> None:
        self.published_agreements.append((client_id, version))

    async def unpublished_invoices(
        self, _: Any, *, exclude: Iterable[str] = (), limit: int = 500
    ) -> list[tuple[str, Invoice | None]]:
        skip = set(self.published_invoices) | set(exclude)
        rows = [(ident, _parsed(i)) for ident, i in self.invoices.items()]
        return [(ident, i) for ident, i in rows if ident not in skip][:limit]

    async def mark_invoices_published(self, _: Any, invoice_ids: list[str]) -> None:
        self.published_invoices += invoice_ids

    async def unpublished_notes(
        self, _: Any, *, exclude: Iterable[str] = (), limit: int = 500
    ) -> list[tuple[str, Note | None]]:
        skip = set(self.published_notes) | set(exclude)
        rows: list[tuple[str, Note | None]] = [(n.note_id, n) for n in self.notes]
        return [(ident, n) for ident, n in rows if ident not in skip][:limit]

    async def mark_notes_published(self, _: Any, note_ids: list[str]) -> None:
        self.published_notes += note_ids


def _parsed(body: dict[str, Any]) -> Invoice | None:
    """As the store reads a row: None for a body that is no valid invoice."""
    try:
        return Invoice.model_validate(body)
    except ValueError:
        return None


class FakeBroker:
    """Records what is published; `refuse` names keys Kafka refuses, `down` makes every
    publication an outage."""

    def __init__(self, refuse: Iterable[bytes] = ()) -> None:
        self.refuse = set(refuse)
        self.down = False
        self.sent: list[tuple[str, bytes, bytes, dict[str, str]]] = []

    async def publish(
        self, value: bytes, topic: str, *, key: bytes, headers: dict[str, str], **_: Any
    ) -> None:
        if self.down:
            raise KafkaConnectionError("broker unreachable")
        if key in self.refuse:
            raise MessageSizeTooLargeError("The message is 2000123 bytes when serialized")
        self.sent.append((topic, key, value, headers))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def billing(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore, broker: FakeBroker, registry: Any
) -> BillingService:
    monkeypatch.setattr(service_module, "store", store)
    monkeypatch.setattr(service_module, "notes_store", store)
    return BillingService(
        pool=cast(asyncpg.Pool, object()),
        broker=cast(KafkaBroker, broker),
        kafka=KafkaConnection.plaintext("127.0.0.1:1"),
        barrier_timeout=1,
        metrics=BillingMetrics(registry),
    )


def refused_count(registry: CollectorRegistry, topic: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "tierline_billing_outbox_refused_total":
                total += sample.value if sample.labels["topic"] == topic else 0
    return total


async def test_one_refused_invoice_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    store = FakeStore(invoices=[invoice("big"), invoice("acme"), invoice("beta")])
    broker = FakeBroker(refuse=[b"big"])
    service = billing(monkeypatch, store, broker, registry)

    assert await service.publish_outbox() == 2
    assert sorted(store.published_invoices) == ["acme-2026-01-1", "beta-2026-01-1"]
    assert refused_count(registry, INVOICES) == 1
    # The refused row is held back: the next pass neither retries it nor loops on it.
    assert await service.publish_outbox() == 0
    assert refused_count(registry, INVOICES) == 1
    store.invoices["gamma-2026-01-1"] = invoice("gamma")
    assert await service.publish_outbox() == 1
    assert "big-2026-01-1" not in store.published_invoices


async def test_a_stored_invoice_that_is_no_invoice_is_held_back_not_raised(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    store = FakeStore(invoices=[{**invoice("bad"), "total": "1e3"}, invoice("acme")])
    broker = FakeBroker()
    service = billing(monkeypatch, store, broker, registry)

    assert await service.publish_outbox() == 1
    assert store.published_invoices == ["acme-2026-01-1"]
    assert [key for _, key, _, _ in broker.sent] == [b"acme"]
    assert refused_count(registry, INVOICES) == 1
    assert await service.publish_outbox() == 0  # held back, not retried at once
    assert refused_count(registry, INVOICES) == 1


async def test_a_refused_agreement_stops_neither_invoices_nor_other_agreements(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    store = FakeStore(
        agreements=[("big", 2, agreement("big", 2)), ("acme", 1, agreement("acme", 1))],
        invoices=[invoice("big"), invoice("acme")],
    )
    broker = FakeBroker(refuse=[b"big"])  # its agreement and its invoice alike
    service = billing(monkeypatch, store, broker, registry)

    assert await service.publish_outbox() == 2
    assert store.published_agreements == [("acme", 1)]
    assert store.published_invoices == ["acme-2026-01-1"]
    assert refused_count(registry, AGREEMENTS) == 1
    assert [(topic, key) for topic, key, _, _ in broker.sent] == [
        (AGREEMENTS, b"acme"),
        (INVOICES, b"acme"),
    ]


async def test_a_stored_agreement_no_longer_valid_is_skipped_not_raised(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    store = FakeStore(
        agreements=[("legacy", 3, None), ("acme", 1, agreement("acme", 1))],
        invoices=[invoice("acme")],
    )
    service = billing(monkeypatch, store, FakeBroker(), registry)
    assert await service.publish_outbox() == 2
    assert store.published_agreements == [("acme", 1)]
    assert refused_count(registry, AGREEMENTS) == 1


async def test_an_outage_ends_the_pass_quietly_and_the_next_pass_publishes(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    store = FakeStore(
        agreements=[("acme", 1, agreement("acme", 1))], invoices=[invoice("acme"), invoice("b")]
    )
    broker = FakeBroker()
    broker.down = True
    service = billing(monkeypatch, store, broker, registry)

    assert await service.publish_outbox() == 0  # no exception: startup and closes go on
    assert store.published_agreements == []
    assert store.published_invoices == []
    assert refused_count(registry, AGREEMENTS) + refused_count(registry, INVOICES) == 0

    broker.down = False
    assert await service.publish_outbox() == 3


async def test_put_agreement_during_an_outage_is_kafka_unavailable(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    class Store(FakeStore):
        async def store_agreement(self, _: Any, agreement: Agreement) -> Agreement:
            return agreement.with_version(1)

    broker = FakeBroker()
    broker.down = True
    service = billing(monkeypatch, Store(), broker, registry)
    monkeypatch.setattr(service, "pool", _Pool())
    with pytest.raises(KafkaUnavailable, match="version 1"):
        await service.put_agreement(agreement("acme", 1))


class _Pool:
    def acquire(self) -> _Pool:
        return self

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


def test_transient_and_refused_errors_are_told_apart() -> None:
    assert is_transient(KafkaConnectionError())
    assert is_transient(TimeoutError())
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(ValueError("cannot encode"))


async def test_invoice_events_are_structured_cloudevents_the_sdk_reads(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    broker = FakeBroker()
    service = billing(monkeypatch, FakeStore(invoices=[invoice("acme")]), broker, registry)
    await service.publish_outbox()
    [(topic, key, value, headers)] = broker.sent
    assert (topic, key) == (INVOICES, b"acme")
    assert headers == {"content-type": "application/cloudevents+json; charset=utf-8"}
    assert not [name for name in headers if name.lower().startswith("ce_")]

    message = KafkaMessage(
        headers={name: text.encode() for name, text in headers.items()}, key=key, value=value
    )
    event = from_kafka_event(message)
    assert event.get_id() == "acme-2026-01-1"
    assert event.get_type() == "bpo.invoice.issued"
    assert event.get_source() == "/tierline/billing"
    assert event.get_subject() == "acme"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == invoice("acme")


async def test_a_note_goes_out_as_an_adjusted_invoice_cloudevent_after_the_invoices(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    note = Note(
        note_id="acme-2026-01-n1",
        client_id="acme",
        invoice_id="acme-2026-01-1",
        period="2026-01",
        currency="USD",
        reclassification="rc-1",
        reason="reclassification rc-1: dispute #42",
        lines=(adjustment_line(Decimal("-125.50")),),
        total=Decimal("-125.50"),
        issued_at=datetime(2026, 2, 10, 12, 0, tzinfo=UTC),
    )
    store, broker = FakeStore(invoices=[invoice("acme")], notes=[note]), FakeBroker()
    service = billing(monkeypatch, store, broker, registry)

    assert await service.publish_outbox() == 2

    (_, _, first, _), (topic, note_key, value, headers) = broker.sent
    assert orjson.loads(first)["type"] == "bpo.invoice.issued"
    event = orjson.loads(value)
    assert (topic, note_key) == (INVOICES, b"acme")
    assert headers == {"content-type": "application/cloudevents+json; charset=utf-8"}
    assert event["type"] == "bpo.invoice.adjusted" and event["id"] == "acme-2026-01-n1"
    assert event["subject"] == "acme" and event["source"] == "/tierline/billing"
    assert event["data"]["total"] == "-125.50"
    assert event["data"]["lines"] == [
        {"kind": "adjustment", "quantity": "1", "unit_price": "-125.50", "amount": "-125.50"}
    ]
    assert store.published_notes == ["acme-2026-01-n1"]
