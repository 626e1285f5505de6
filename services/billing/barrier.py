"""The completeness barrier of SPEC §6: before a period closes, everything intake accepted before
the request must be metered.

Intake answers 202 only once an item is in `workitems.completed`, so "accepted before the request"
means "below that topic's end offsets now". The classifier commits an offset only after its
output is acknowledged, so once its committed offsets pass those ends, every such item is in the
`workitems.classified` below *its* ends at that moment; metering commits only after
its database transaction, so once its committed offsets pass those, every item is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from shared.contracts.topics import (
    CLASSIFIER_GROUP,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
)
from shared.infra.kafka import committed_offsets, end_offsets
from shared.infra.kafka_connection import KafkaConnection


class BarrierTimeout(Exception):
    pass


async def wait_until_metered(kafka: KafkaConnection, *, timeout: float) -> None:
    """Returns once everything accepted so far is metered; BarrierTimeout (a 503: nothing is
    closed, the caller retries) when that takes longer than `timeout` or Kafka cannot answer."""
    deadline = time.monotonic() + timeout
    accepted = await _ends(kafka, WORKITEMS_COMPLETED)
    await _wait_for_group(kafka, CLASSIFIER_GROUP, accepted, deadline)
    classified = await _ends(kafka, WORKITEMS_CLASSIFIED)
    await _wait_for_group(kafka, METERING_GROUP, classified, deadline)


async def _ends(kafka: KafkaConnection, topic: str) -> dict[TopicPartition, int]:
    try:
        return await end_offsets(kafka, [topic])
    except (KafkaError, OSError, TimeoutError) as error:  # an outage: a 503, never a 500
        raise BarrierTimeout(f"Kafka cannot tell the end of {topic}: {error!r}") from error


def lagging(
    ends: dict[TopicPartition, int], committed: dict[TopicPartition, int]
) -> Sequence[TopicPartition]:
    return [tp for tp, end in ends.items() if end > 0 and committed.get(tp, 0) < end]


async def _wait_for_group(
    kafka: KafkaConnection, group: str, ends: dict[TopicPartition, int], deadline: float
) -> None:
    delay = 0.02
    while True:
        try:
            behind = lagging(ends, await committed_offsets(kafka, group))
        except KafkaError:
            behind = list(ends)  # the coordinator is moving or starting: ask again
        if not behind:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in behind[:6])
            raise BarrierTimeout(f"consumer group {group} has not caught up on {names}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
