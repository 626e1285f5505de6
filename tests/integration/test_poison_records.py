"""No single record on any topic stalls a consumer (SPEC §12), on a real broker and database.

Poison records are written straight to the topics, among valid ones, and fed to the services'
own handlers and agreement view: each poison record ends in `<topic>.dlq` with its error and
origin, the valid ones are processed exactly once, the handler returns (so the offsets commit)
and a valid record sent after them is processed too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.classifier import handlers
from services.classifier.handlers import Classifier, ClassifierMetrics
from services.metering import alerts as metering_alerts
from services.metering.handlers import Meter, MeteringMetrics
from shared.contracts.topics import (
    AGREEMENTS,
    CONSUMED_TOPICS,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
    dlq,
)
from shared.contracts.workitems import CLASSIFIED_RECORDS, CompletedWorkItem
from shared.domain.agreement import rules
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.infra.agreement_view import agreement_view
from shared.infra.kafka import (
    BatchProducer,
    CompactedView,
    end_offsets,
    ensure_topics,
    make_broker,
    partitions_of,
)
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.reads import counts_between
from tests.e2e.test_billing_rules import agreement as agreement_body
from tests.records import AT, classified_record, completed_record


@pytest.fixture
async def broker(kafka: KafkaConnection) -> AsyncIterator[KafkaBroker]:
    await ensure_topics(kafka, partitions=6)
    broker = make_broker(kafka, client_id="poison-test")
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


def completed(client: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return completed_record(item_id, client=client, queue="Care", **fields)


def classified(client: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return classified_record(item_id, client=client, queue="Care", rule_id="care", **fields)


class Sent:
    """Records written to one topic for one client key: their offsets, in one partition."""

    def __init__(self, topic: str, key: bytes) -> None:
        self.topic, self.key = topic, key
        self.partition = -1
        self.offsets: dict[str, int] = {}

    async def send(self, producer: AIOKafkaProducer, name: str, value: bytes) -> None:
        meta = await producer.send_and_wait(self.topic, value, key=self.key)
        self.partition, self.offsets[name] = meta.partition, meta.offset

    async def consume(
        self, bootstrap: str, names: Sequence[str]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """The named records as a consumer fetches them, in partition order (one batch)."""
        wanted = {self.offsets[name] for name in names}
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, self.partition)
            consumer.assign([tp])
            consumer.seek(tp, min(wanted))
            got: list[ConsumerRecord[bytes, bytes]] = []
            while len(got) < len(wanted):
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    got += [r for r in records if r.offset in wanted]
            return got
        finally:
            await consumer.stop()


async def records_since(
    bootstrap: str, topic: str, since: dict[TopicPartition, int]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record written to `topic` after the offsets `since`, up to its end offsets now."""
    ends = await end_offsets(KafkaConnection.plaintext(bootstrap), [topic])
    found: list[ConsumerRecord[bytes, bytes]] = []
    partitions = [tp for tp, end in ends.items() if end > since.get(tp, 0)]
    if not partitions:
        return found
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp, 0))
        remaining = set(partitions)
        while remaining:
            for records in (await consumer.getmany(*remaining, timeout_ms=1000)).values():
                found += records
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def dead_letters(
    bootstrap: str, topic: str, since: dict[TopicPartition, int], origin_partition: int
) -> dict[int, list[tuple[bytes | None, dict[str, str]]]]:
    """The dead letters written to `topic`'s DLQ since `since`, for records of one origin
    partition, by origin offset: (value, headers)."""
    found: dict[int, list[tuple[bytes | None, dict[str, str]]]] = {}
    for record in await records_since(bootstrap, dlq(topic), since):
        headers = {k: v.decode() for k, v in record.headers}
        if (
            headers.get("origin_topic") == topic
            and int(headers["origin_partition"]) == origin_partition
        ):
            found.setdefault(int(headers["origin_offset"]), []).append((record.value, headers))
    return found


def assert_dead_letter(
    letters: list[tuple[bytes | None, dict[str, str]]], sent: Sent, name: str, value: bytes
) -> dict[str, str]:
    assert len(letters) == 1, f"{name}: dead-lettered {len(letters)} times"
    [(body, headers)] = letters
    assert body == value  # the original value, unchanged
    assert headers["error"] and headers["error_type"]
    assert headers["origin_topic"] == sent.topic
    assert headers["origin_partition"] == str(sent.partition)
    assert headers["origin_offset"] == str(sent.offsets[name])
    assert int(headers["origin_timestamp"]) > 0
    return headers


@contextlib.asynccontextmanager
async def started_view(bootstrap: str, client: str) -> AsyncIterator[CompactedView[Agreement]]:
    """The services' agreement view, started, under a service name of this test's own."""
    view = agreement_view(KafkaConnection.plaintext(bootstrap), service=f"test-{client}")
    await view.start()
    try:
        yield view
    finally:
        await view.stop()


@contextlib.asynccontextmanager
async def started_classifier(
    bootstrap: str, broker: KafkaBroker, client: str, producer: BatchProducer | None = None
) -> AsyncIterator[Classifier]:
    """The classifier's handler on a started agreement view and (unless given) producer."""
    out = producer or BatchProducer(KafkaConnection.plaintext(bootstrap), client_id="poison-test")
    async with started_view(bootstrap, client) as view:
        if producer is None:
            await out.start()
        try:
            yield Classifier(
                broker=broker,
                producer=out,
                agreements=view,
                metrics=ClassifierMetrics(CollectorRegistry()),
            )
        finally:
            if producer is None:
                await out.stop()


async def metered(pool: asyncpg.Pool, client: str) -> tuple[int, set[str]]:
    counts = await counts_between(pool, client, AT - timedelta(days=30), AT + timedelta(days=30))
    rows = await pool.fetch("SELECT item_id FROM metering.items WHERE client_id = $1", client)
    return sum(c.items for c in counts), {r["item_id"] for r in rows}


async def test_metering_dead_letters_each_poison_record_and_counts_the_rest_once(
    kafka_bootstrap: str,
    kafka: KafkaConnection,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
) -> None:
    client = f"poison-{uuid.uuid4().hex[:8]}"
    sent = Sent(WORKITEMS_CLASSIFIED, client.encode())
    poison = {
        "nul-in-id": orjson.dumps(classified(client, "bad\u0000id")),
        "year-0001": orjson.dumps(
            classified(client, "year-one", completed_at="0001-01-01T00:00:00+14:00")
        ),
        "version-3e9": orjson.dumps(classified(client, "v3e9", agreement_version=3_000_000_000)),
        "unknown-line": orjson.dumps(classified(client, "gardening", service_line="gardening")),
        "garbage": b'{"id": "x", "client_id": ',
    }
    valid = {
        name: orjson.dumps(classified(client, name))
        for name in ("first", "middle", "last", "after")
    }
    since = await end_offsets(kafka, [dlq(WORKITEMS_CLASSIFIED)])
    order = ["first", "nul-in-id", "year-0001", "middle", "version-3e9", "unknown-line"]
    order += ["garbage", "last"]
    for name in order:
        await sent.send(producer, name, poison.get(name) or valid[name])

    async with started_view(kafka_bootstrap, client) as view:
        meter = Meter(broker, pool, view, MeteringMetrics(CollectorRegistry()))
        batch = await sent.consume(kafka_bootstrap, order)
        counted = await meter.handle(batch)  # returns: the offsets of the whole batch commit
        assert sorted(item.item_id for item in counted) == ["first", "last", "middle"]
        assert await metered(pool, client) == (3, {"first", "middle", "last"})

        # A redelivery of the same batch (a crash before the offsets commit) counts nothing more.
        assert await meter.handle(await sent.consume(kafka_bootstrap, order)) == []
        assert await metered(pool, client) == (3, {"first", "middle", "last"})

        # The partition keeps flowing: an item sent after the poison is counted.
        await sent.send(producer, "after", valid["after"])
        counted = await meter.handle(await sent.consume(kafka_bootstrap, ["after"]))
        assert [item.item_id for item in counted] == ["after"]
        assert await metered(pool, client) == (4, {"first", "middle", "last", "after"})

    letters = await dead_letters(kafka_bootstrap, WORKITEMS_CLASSIFIED, since, sent.partition)
    by_name = {name: letters.get(sent.offsets[name], []) for name in order}
    for name in ("first", "middle", "last"):
        assert by_name[name] == [], f"{name} is valid and was dead-lettered"
    for name, value in poison.items():
        # The redelivered batch dead-letters its poison again: keep the first run's letters.
        first_run = [by_name[name][0]] if by_name[name] else []
        assert_dead_letter(first_run, sent, name, value)
    assert "gardening" in by_name["unknown-line"][0][1]["error"]


async def test_an_unknown_class_already_in_the_ledger_is_read_as_unclassified(
    pool: asyncpg.Pool,
) -> None:
    client = f"legacy-{uuid.uuid4().hex[:8]}"
    day = AT.replace(hour=0, minute=0, second=0, microsecond=0)
    await pool.execute(
        """INSERT INTO metering.usage_days (client_id, day, service_line, complexity, items,
                                            units, handling_seconds, late_items)
           VALUES ($1, $2, 'gardening', 'basic', 2, 2, 0, 0),
                  ($1, $2, 'hr', 'huge', 1, 1, 0, 0),
                  ($1, $2, 'hr', 'basic', 3, 3, 0, 0)""",
        client,
        day,
    )
    counts = await counts_between(pool, client, day, day + timedelta(days=1))
    assert sorted((c.service_line, c.complexity) for c in counts if c.classified) == [
        ("hr", "basic")
    ]
    assert [c.service_class.service_line for c in counts if c.classified] == ["hr"]
    assert sum(c.items for c in counts if not c.classified) == 3


async def publish_agreement(producer: AIOKafkaProducer, client: str, version: int) -> Agreement:
    current = parse_agreement(agreement_body(client, "USD", "UTC", ("1.00", "2.00")))
    current = current.with_version(version)
    await producer.send_and_wait(AGREEMENTS, orjson.dumps(current.to_wire()), key=client.encode())
    return current


async def client_with_agreement(producer: AIOKafkaProducer, prefix: str) -> str:
    """A new client id starting with `prefix`, whose agreement (version 1) is on the topic."""
    client = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await publish_agreement(producer, client, 1)
    return client


async def test_the_classifier_dead_letters_an_item_whose_classified_copy_is_too_large(
    kafka_bootstrap: str,
    kafka: KafkaConnection,
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await client_with_agreement(producer, "big")
    sent = Sent(WORKITEMS_COMPLETED, client.encode())
    # An input that fits in a record, whose classified copy (with its class, rule and agreement
    # version) does not. Every item within SPEC §2's bounds encodes far below MAX_RECORD_BYTES
    # (the largest to about 626 KB), so the limit is lowered to just above this input's size.
    oversize = orjson.dumps(completed(client, "huge", attributes={"blob": "x" * 1000}))
    limit = len(client) + len(oversize) + 20
    monkeypatch.setattr(handlers, "MAX_RECORD_BYTES", limit)
    valid = {name: orjson.dumps(completed(client, name)) for name in ("before", "after", "later")}
    since_dlq = await end_offsets(kafka, [dlq(WORKITEMS_COMPLETED)])
    for name in ("before", "huge", "after"):
        await sent.send(producer, name, oversize if name == "huge" else valid[name])
    since_out = await end_offsets(kafka, [WORKITEMS_CLASSIFIED])

    async with started_classifier(kafka_bootstrap, broker, client) as classifier:
        await classifier.handle(await sent.consume(kafka_bootstrap, ["before", "huge", "after"]))
        await sent.send(producer, "later", valid["later"])
        await classifier.handle(await sent.consume(kafka_bootstrap, ["later"]))

    published = await classified_ids(kafka_bootstrap, client, since_out)
    assert published == ["before", "after", "later"]
    letters = await dead_letters(kafka_bootstrap, WORKITEMS_COMPLETED, since_dlq, sent.partition)
    assert set(letters) == {sent.offsets["huge"]}
    headers = assert_dead_letter(letters[sent.offsets["huge"]], sent, "huge", oversize)
    assert headers["error_type"] == "RecordTooLarge"
    assert str(limit) in headers["error"]


async def classified_ids(
    bootstrap: str, client: str, since: dict[TopicPartition, int]
) -> list[str]:
    """The ids of `client`'s items published to `workitems.classified` since `since`."""
    records = await records_since(bootstrap, WORKITEMS_CLASSIFIED, since)
    return [
        item.id
        for r in records
        if r.key == client.encode()
        for item in CLASSIFIED_RECORDS.decode(r.value)
    ]


async def test_an_unusable_agreements_record_never_applies_and_is_dead_lettered_once(
    kafka_bootstrap: str, kafka: KafkaConnection, broker: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    client = f"agr-{uuid.uuid4().hex[:8]}"
    other = f"other-{uuid.uuid4().hex[:8]}"
    service = f"test-{client}"
    since = await end_offsets(kafka, [dlq(AGREEMENTS)])
    real = await publish_agreement(producer, client, 2)
    sent = Sent(AGREEMENTS, client.encode())
    # Under the client's key: another client's agreement with a higher version, garbage, and
    # a body that is no valid agreement. None of them may replace version 2.
    impostor = parse_agreement(agreement_body(other, "EUR", "UTC", ("5.00", "9.00")))
    poison = {
        "key-mismatch": orjson.dumps(impostor.with_version(9).to_wire()),
        "garbage": b"\xff\xfe not json",
        "invalid": orjson.dumps(
            {**{k: v for k, v in real.to_wire().items() if k != "pricing"}, "version": 7}
        ),
    }
    for name, value in poison.items():
        await sent.send(producer, name, value)

    view = agreement_view(kafka, service=service)
    await view.start()
    try:
        assert view.get(client) == real and real.version == 2
        assert view.get(other) is None
        # The partition keeps flowing: a newer real version after the poison applies.
        newer = await publish_agreement(producer, client, 3)
        await view.caught_up()
        assert view.get(client) == newer
    finally:
        await view.stop()

    # A restart re-reads the topic from the beginning: nothing is dead-lettered twice.
    again = agreement_view(kafka, service=service)
    await again.start()
    try:
        assert again.get(client) == newer
        assert again.rejected >= len(poison)  # refused again, but not written again
    finally:
        await again.stop()

    letters = await dead_letters(kafka_bootstrap, AGREEMENTS, since, sent.partition)
    mine = {
        offset: [(v, h) for v, h in found if h.get("dead_lettered_by") == service]
        for offset, found in letters.items()
    }
    for name, value in poison.items():
        headers = assert_dead_letter(mine.get(sent.offsets[name], []), sent, name, value)
        assert headers["dead_lettered_by"] == service
    mismatch = mine[sent.offsets["key-mismatch"]][0][1]
    assert client in mismatch["error"] and other in mismatch["error"]


async def test_an_item_whose_rules_raise_is_dead_lettered_and_the_others_classified(
    kafka_bootstrap: str,
    kafka: KafkaConnection,
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await client_with_agreement(producer, "raise")

    def classify(item: CompletedWorkItem, agreement: Agreement | None) -> Any:
        if item.id == "explodes":
            raise RuntimeError("rule evaluation blew up")
        return rules.classify(item, agreement)

    monkeypatch.setattr(handlers, "classify", classify)
    sent = Sent(WORKITEMS_COMPLETED, client.encode())
    names = ["before", "explodes", "after"]
    since_dlq = await end_offsets(kafka, [dlq(WORKITEMS_COMPLETED)])
    for name in names:
        await sent.send(producer, name, orjson.dumps(completed(client, name)))
    since_out = await end_offsets(kafka, [WORKITEMS_CLASSIFIED])

    async with started_classifier(kafka_bootstrap, broker, client) as classifier:
        await classifier.handle(await sent.consume(kafka_bootstrap, names))

    assert await classified_ids(kafka_bootstrap, client, since_out) == ["before", "after"]
    letters = await dead_letters(kafka_bootstrap, WORKITEMS_COMPLETED, since_dlq, sent.partition)
    assert set(letters) == {sent.offsets["explodes"]}
    value = orjson.dumps(completed(client, "explodes"))
    headers = assert_dead_letter(letters[sent.offsets["explodes"]], sent, "explodes", value)
    assert headers["error"] == "RuntimeError: rule evaluation blew up"


class _KafkaAway(BatchProducer):
    async def send_many(self, *args: Any, **kwargs: Any) -> int:
        raise KafkaConnectionError("broker unreachable")


async def test_a_kafka_outage_fails_the_classifier_batch_and_dead_letters_nothing(
    kafka_bootstrap: str, kafka: KafkaConnection, broker: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    client = f"outage-{uuid.uuid4().hex[:8]}"
    sent = Sent(WORKITEMS_COMPLETED, client.encode())
    since_dlq = await end_offsets(kafka, [dlq(WORKITEMS_COMPLETED)])
    await sent.send(producer, "one", orjson.dumps(completed(client, "one")))
    away = _KafkaAway(kafka, client_id="poison-test")
    async with started_classifier(kafka_bootstrap, broker, client, away) as classifier:
        with pytest.raises(KafkaConnectionError):  # the batch is redelivered, never skipped
            await classifier.handle(await sent.consume(kafka_bootstrap, ["one"]))
    letters = await dead_letters(kafka_bootstrap, WORKITEMS_COMPLETED, since_dlq, sent.partition)
    assert sent.offsets["one"] not in letters


async def test_alerts_that_cannot_be_worked_out_never_fail_the_count(
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await client_with_agreement(producer, "alerts")

    def new_alerts(*args: Any) -> Any:
        raise ArithmeticError("an alert computation failed")

    monkeypatch.setattr(metering_alerts, "new_alerts", new_alerts)
    sent = Sent(WORKITEMS_CLASSIFIED, client.encode())
    names = ["one", "two"]
    for name in names:
        await sent.send(producer, name, orjson.dumps(classified(client, name)))
    registry = CollectorRegistry()
    async with started_view(kafka_bootstrap, client) as view:
        meter = Meter(broker, pool, view, MeteringMetrics(registry))
        counted = await meter.handle(await sent.consume(kafka_bootstrap, names))
    assert [item.item_id for item in counted] == names
    assert await metered(pool, client) == (2, {"one", "two"})
    assert registry.get_sample_value("tierline_metering_alert_failures_total") == 1


async def test_every_consumed_topic_has_its_dead_letter_topic(kafka: KafkaConnection) -> None:
    await ensure_topics(kafka, partitions=6)
    for topic in CONSUMED_TOPICS:
        assert await partitions_of(kafka, dlq(topic)), dlq(topic)
    assert dlq(AGREEMENTS) in {dlq(topic) for topic in CONSUMED_TOPICS}
