"""`shared.kafka` of the peer kit (bench/peer_compat): our Kafka plumbing, called with the
bootstrap string the kit passes where ours now takes a `KafkaConnection` (the kit's broker is its
own, local and PLAINTEXT)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import TopicPartition

from shared.infra import kafka
from shared.infra.kafka_connection import KafkaConnection


class BatchProducer(kafka.BatchProducer):
    def __init__(self, bootstrap: str, *, client_id: str) -> None:
        super().__init__(KafkaConnection.plaintext(bootstrap), client_id=client_id)


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    return await kafka.end_offsets(KafkaConnection.plaintext(bootstrap), topics)


async def ensure_topics(bootstrap: str, *, partitions: int) -> None:
    await kafka.ensure_topics(KafkaConnection.plaintext(bootstrap), partitions=partitions)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    return await kafka.partitions_of(KafkaConnection.plaintext(bootstrap), topic)
