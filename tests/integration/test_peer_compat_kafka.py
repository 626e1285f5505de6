"""The peer kit's Kafka names (bench/peer_compat/kafka.py, imported as `shared.kafka`) on a real
broker, called with a bootstrap string as the kit calls them: produce, then read the ends and the
partitions back; and the kit's own helpers over them when the kit is beside this checkout."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from shared.contracts.topics import ALL_TOPICS
from tests.peer_kit import load_kit, resolve
from tests.topics import new_topic

PARTITIONS = 3
KEYS = [f"c{n:03d}".encode() for n in range(5)]


async def produce(bootstrap: str, topic: str) -> list[tuple[str, bytes, bytes]]:
    """Four values for each of five keys, the last one per key ending in "-3"."""
    producer: Any = resolve("shared.kafka", "BatchProducer")(bootstrap, client_id="peer-compat")
    messages = [(topic, key, key + f"-{n}".encode()) for n in range(4) for key in KEYS]
    await producer.start()
    try:
        assert await producer.send_many(messages) == len(messages)
    finally:
        await producer.stop()
    return messages


async def test_the_kafka_adapters_work_with_a_bootstrap_string(kafka_bootstrap: str) -> None:
    kafka: Any = resolve("shared", "kafka")
    await kafka.ensure_topics(kafka_bootstrap, partitions=PARTITIONS)
    for topic in ALL_TOPICS:  # created now, or by an earlier test: present either way
        assert await kafka.partitions_of(kafka_bootstrap, topic)
    topic = await new_topic(kafka_bootstrap, "peer-compat", partitions=PARTITIONS)
    messages = await produce(kafka_bootstrap, topic)
    assert await kafka.partitions_of(kafka_bootstrap, topic) == list(range(PARTITIONS))
    ends = await kafka.end_offsets(kafka_bootstrap, [topic])
    assert set(ends) == {TopicPartition(topic, p) for p in range(PARTITIONS)}
    assert sum(ends.values()) == len(messages)


async def test_the_kits_topic_helpers_run_on_the_adapters(kafka_bootstrap: str) -> None:
    """The kit's `topic_ends` (end_offsets) and `read_table` (partitions_of), unchanged."""
    kit = load_kit()
    topic = await new_topic(kafka_bootstrap, "peer-compat-kit", partitions=PARTITIONS)
    messages = await produce(kafka_bootstrap, topic)
    ends = await kit.topic_ends(kafka_bootstrap, topic)
    assert sum(ends.values()) == len(messages)
    assert await kit.read_table(kafka_bootstrap, topic) == {key: key + b"-3" for key in KEYS}
