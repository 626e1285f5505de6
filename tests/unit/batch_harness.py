"""A batch handler under test on FastStream's in-memory broker (TestKafkaBroker): subscribed as
the service subscribes it (`subscribe_hot_batches`), with what it dead-letters and its metrics at
hand. The classifier's and metering's handler tests each extend `BatchHarness` with their fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from shared.contracts.topics import dlq
from shared.infra.kafka import BatchHandler, subscribe_hot_batches


@dataclass(kw_only=True)
class BatchHarness:
    broker: KafkaBroker
    #: The topic the handler consumes.
    topic: str
    registry: CollectorRegistry
    dead_letters: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)

    async def send(self, *values: bytes) -> None:
        """One batch of records on the topic, as the subscriber would fetch it."""
        await self.broker.publish_batch(*values, topic=self.topic)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


H = TypeVar("H", bound=BatchHarness)


@asynccontextmanager
async def handling(
    harness: H, *, group_id: str, handle: BatchHandler, title: str
) -> AsyncIterator[H]:
    """`handle` subscribed to the harness's topic (batches of up to 100 records) and its
    dead-letter topic recorded, while the in-memory broker runs."""
    subscribe_hot_batches(
        harness.broker,
        harness.topic,
        group_id=group_id,
        max_records=100,
        batch_timeout_ms=10,
        handle=handle,
        title=title,
        description="under test",
    )

    @harness.broker.subscriber(dlq(harness.topic))
    async def dead_letter(msg: KafkaMessage) -> None:
        harness.dead_letters.append(msg.raw_message)

    async with TestKafkaBroker(harness.broker):
        yield harness
