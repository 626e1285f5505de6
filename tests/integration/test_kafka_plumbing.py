"""The shared Kafka plumbing on a real broker: topics, the agreement view, offsets, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter

from services.billing.barrier import lagging
from shared.contracts.topics import AGREEMENTS, ALL_TOPICS, WORKITEMS_COMPLETED, dlq
from shared.contracts.workitems import COMPLETED_RECORDS
from shared.infra.kafka import (
    CompactedView,
    committed_offsets,
    decode_items,
    end_offsets,
    ensure_topics,
    make_broker,
    subscribe_hot_batches,
)
from shared.infra.kafka_connection import KafkaConnection
from tests.topics import new_topic


async def test_topics_are_created_with_partitions_and_agreements_compacted(
    kafka_bootstrap: str,
    kafka: KafkaConnection,
) -> None:
    await ensure_topics(kafka, partitions=6)
    await ensure_topics(kafka, partitions=6)  # idempotent
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics(list(ALL_TOPICS))}
        partitions = {t: len(described[t]["partitions"]) for t in ALL_TOPICS}
        assert partitions == dict.fromkeys(ALL_TOPICS, 6), described
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, AGREEMENTS)]
        )
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_the_view_keeps_the_newest_version_and_catches_up(
    kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    await ensure_topics(kafka, partitions=6)
    key = f"view-{uuid.uuid4().hex[:6]}"
    view: CompactedView[dict[str, int]] = CompactedView(
        kafka,
        AGREEMENTS,
        orjson.loads,
        newer=lambda a, b: a["version"] >= b["version"],
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    await view.start()
    try:
        for version in (1, 3, 2):  # 2 is a late republish: it must not win over 3
            await producer.send_and_wait(
                AGREEMENTS, orjson.dumps({"version": version}), key=key.encode()
            )
        await view.caught_up(timeout=10)
        assert view.get(key) == {"version": 3}
    finally:
        await view.stop()
        await producer.stop()


async def test_committed_offsets_tell_when_a_group_has_caught_up(
    kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    topic = await new_topic(kafka_bootstrap, "barrier", partitions=2)
    group = f"g-{topic}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    for n in range(10):
        await producer.send_and_wait(topic, b"x", key=str(n).encode())
    await producer.stop()
    ends = await end_offsets(kafka, [topic])
    assert sum(ends.values()) == 10
    assert lagging(ends, await committed_offsets(kafka, group))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen = 0
    async with asyncio.timeout(20):
        while seen < 10:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += len(records)
    await consumer.commit()
    await consumer.stop()
    assert not lagging(ends, await committed_offsets(kafka, group))


async def test_a_record_that_breaks_the_contract_is_dead_lettered_with_its_error(
    kafka_bootstrap: str,
    kafka: KafkaConnection,
) -> None:
    await ensure_topics(kafka, partitions=6)
    broker = KafkaBroker(kafka_bootstrap)
    await broker.start()
    marker = uuid.uuid4().hex.encode()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        meta = await producer.send_and_wait(WORKITEMS_COMPLETED, marker, key=b"poison")
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        tp = TopicPartition(WORKITEMS_COMPLETED, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = (await consumer.getmany(tp, timeout_ms=5000))[tp][0]
        await consumer.stop()
        dead_letters = Counter("dead_letters", "test", ["topic"], registry=CollectorRegistry())
        assert await decode_items(broker, [record], COMPLETED_RECORDS, dead_letters) == []
        assert dead_letters.labels(topic=WORKITEMS_COMPLETED)._value.get() == 1

        reader = AIOKafkaConsumer(
            dlq(WORKITEMS_COMPLETED),
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await reader.start()
        found = None
        async with asyncio.timeout(20):
            while found is None:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    found = next((r for r in records if r.value == marker), found)
        await reader.stop()
        headers = {k: v.decode() for k, v in found.headers}
        assert headers["origin_topic"] == WORKITEMS_COMPLETED
        assert headers["origin_partition"] == str(meta.partition)
        assert headers["origin_offset"] == str(meta.offset)
        assert headers["error"].startswith("not a valid CompletedWorkItem: ")
        assert headers["error_type"] == "contract"
        assert found.key == b"poison"
    finally:
        await broker.stop()


async def send_round_robin(
    bootstrap: str, topic: str, *, records: int, partitions: int
) -> set[tuple[int, int]]:
    """`records` values v0, v1, … sent to the partitions in turn; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = set()
        for n in range(records):
            meta = await producer.send_and_wait(topic, f"v{n}".encode(), partition=n % partitions)
            sent.add((meta.partition, meta.offset))
    finally:
        await producer.stop()
    return sent


async def test_a_failed_hot_batch_is_redelivered_whole_across_its_partitions(
    kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    # The hot-path parser hands over the raw records without FastStream's per-record parsing;
    # a batch the handler fails must still rewind every partition it spans, not only the first.
    topic = await new_topic(kafka_bootstrap, "hot", partitions=3)
    sent = await send_round_robin(kafka_bootstrap, topic, records=60, partitions=3)

    failed: list[tuple[int, int]] = []
    handled: set[tuple[int, int]] = set()
    sizes: list[int] = []
    everything = asyncio.Event()

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        if not failed:
            failed.extend((r.partition, r.offset) for r in records)
            raise RuntimeError("this batch fails once")
        sizes.append(len(records))
        handled.update((r.partition, r.offset) for r in records)
        if handled >= sent:
            everything.set()

    registry = CollectorRegistry()
    broker = make_broker(kafka, client_id="hot-test", registry=registry)
    subscribe_hot_batches(
        broker,
        topic,
        group_id=f"hot-{uuid.uuid4().hex[:8]}",
        max_records=1000,
        batch_timeout_ms=200,
        handle=handle,
        title="hot",
        description="a hot-path consumer under test",
    )
    await broker.start()
    try:
        await asyncio.wait_for(everything.wait(), 30)
    finally:
        await broker.stop()
    assert len({partition for partition, _ in failed}) > 1, "the failed batch spanned partitions"
    assert set(failed) <= handled  # every record of it came back
    assert handled == sent
    labels = {"app_name": "faststream", "broker": "kafka", "handler": topic}
    received = registry.get_sample_value("faststream_received_messages_total", labels)
    assert received is not None and received >= len(sent)  # counted per record, not per batch
    size = registry.get_sample_value("faststream_received_messages_size_bytes_sum", labels)
    assert size is not None and size >= sum(len(f"v{n}") for n in range(60))  # every body


async def both_assigned(broker: KafkaBroker) -> None:
    """Until every subscriber's consumer holds partitions (the group has settled): aiokafka's
    state, polled, since it offers no event to await."""
    while not all(  # noqa: ASYNC110
        (consumer := getattr(s, "consumer", None)) is not None and consumer.assignment()
        for s in broker.subscribers
    ):
        await asyncio.sleep(0.1)


async def test_lanes_hold_batches_of_different_partitions_in_flight_at_once(
    kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    # Two lanes are two consumers of one group in one process: while one lane's batch waits
    # (here a sleep; in metering its transaction), the other lane's batch is being handled.
    topic = await new_topic(kafka_bootstrap, "lanes", partitions=6)
    handled: list[tuple[int, int]] = []
    sent: set[tuple[int, int]] = {(-1, -1)}  # until sent
    in_flight: set[frozenset[int]] = set()
    overlaps: list[tuple[frozenset[int], frozenset[int]]] = []
    everything = asyncio.Event()

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        partitions = frozenset(r.partition for r in records)
        overlaps.extend((partitions, other) for other in in_flight)
        in_flight.add(partitions)
        await asyncio.sleep(0.3)
        in_flight.discard(partitions)
        handled.extend((r.partition, r.offset) for r in records)
        if set(handled) >= sent:
            everything.set()

    broker = make_broker(kafka, client_id="lanes-test")
    subscribe_hot_batches(
        broker,
        topic,
        group_id=f"lanes-{uuid.uuid4().hex[:8]}",
        max_records=10,
        batch_timeout_ms=50,
        handle=handle,
        title="lanes",
        description="two lanes under test",
        lanes=2,
    )
    await broker.start()
    try:
        # Sent once both lanes hold their share (a batch in flight across a rebalance is
        # redelivered: once per record is what the lanes give, at least once what Kafka does).
        await asyncio.wait_for(both_assigned(broker), 30)
        assert len(broker.subscribers) == 2
        sent = await send_round_robin(kafka_bootstrap, topic, records=120, partitions=6)
        await asyncio.wait_for(everything.wait(), 60)
    finally:
        await broker.stop()
    assert sorted(handled) == sorted(sent)  # each record once: the lanes split the partitions
    assert overlaps, "no two batches were ever in flight at once"
    assert all(not (mine & theirs) for mine, theirs in overlaps)  # never the same partition
