"""The hot-path producer on a real broker: a record the broker refuses fails only its own send,
and the producer keeps working for every later one (aiokafka's idempotent producer otherwise
answers OutOfOrderSequenceNumber for that partition from then on)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from shared.infra.kafka import BatchProducer, partitions_of
from shared.infra.kafka_connection import KafkaConnection
from tests.topics import new_topic

SMALL_LIMIT = 20_000  # the topic's max.message.bytes


async def small_topic(bootstrap: str) -> str:
    topic = await new_topic(bootstrap, "wedge", configs={"max.message.bytes": str(SMALL_LIMIT)})
    await partitions_of(KafkaConnection.plaintext(bootstrap), topic)  # wait for its metadata
    return topic


async def values_in(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while await consumer.position(partition) < end:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values += [record.value for record in records if record.value is not None]
        return values
    finally:
        await consumer.stop()


async def test_a_refused_record_does_not_wedge_the_partition(
    kafka_bootstrap: str, kafka: KafkaConnection
) -> None:
    topic = await small_topic(kafka_bootstrap)
    producer = BatchProducer(kafka, client_id="wedge-test", linger_ms=0)
    await producer.start()
    try:
        assert await producer.send_many([(topic, b"acme", b"before")]) == 1
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send_many([(topic, b"acme", b"x" * (2 * SMALL_LIMIT))])
        # the same partition, right after the refusal: both sends must succeed
        assert await producer.send_many([(topic, b"acme", b"after-1")]) == 1
        assert await producer.send_many([(topic, b"acme", b"after-2")]) == 1
    finally:
        await producer.stop()
    assert await values_in(kafka_bootstrap, topic) == [b"before", b"after-1", b"after-2"]
