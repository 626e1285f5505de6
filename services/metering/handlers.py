"""Meter a batch: decode → count once in PostgreSQL (one transaction) → then the offsets commit.

A database outage is waited out with backoff (never dead-lettered); a message that breaks the
contract goes to `<topic>.dlq` and its partition keeps flowing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from services.metering.counting import MeteredItem, metered_item
from services.metering.store import meter_batch
from shared.agreements import Agreement
from shared.db import retrying
from shared.events import ClassifiedWorkItem
from shared.kafka import CompactedView, dead_letter

log = logging.getLogger(__name__)


class MeteringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.metered = Counter(
            "tierline_metering_items",
            "Items counted (first copies only), by client",
            ["client_id"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tierline_metering_duplicates", "Copies of items already counted", registry=registry
        )
        self.dead_letters = Counter(
            "tierline_dead_letters",
            "Messages sent to a dead-letter topic",
            ["topic"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "tierline_metering_batch_size",
            "Records per consumed batch",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
        self.db_seconds = Histogram(
            "tierline_metering_db_seconds",
            "Database time to count one batch",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )


class Meter:
    def __init__(
        self,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        agreements: CompactedView[Agreement],
        metrics: MeteringMetrics,
    ) -> None:
        self.broker = broker
        self.pool = pool
        self.agreements = agreements
        self.metrics = metrics

    def timezone_of(self, client_id: str) -> str:
        agreement = self.agreements.get(client_id)
        return agreement.timezone if agreement is not None else "UTC"

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[MeteredItem]:
        self.metrics.batch_size.observe(len(records))
        batch: list[MeteredItem] = []
        for record in records:
            try:
                item = ClassifiedWorkItem.model_validate_json(record.value or b"")
            except ValidationError as error:
                await dead_letter(self.broker, record, _contract_error(error))
                self.metrics.dead_letters.labels(topic=record.topic).inc()
                continue
            batch.append(metered_item(item))
        if not batch:
            return []
        started = time.perf_counter()
        counted = await retrying(
            lambda: meter_batch(self.pool, batch, timezone_of=self.timezone_of), what="meter batch"
        )
        self.metrics.db_seconds.observe(time.perf_counter() - started)
        self.metrics.duplicates.inc(len(batch) - len(counted))
        for counted_item in counted:
            self.metrics.metered.labels(client_id=counted_item.client_id).inc()
        return counted


def _contract_error(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "<message>"
    count = error.error_count()
    return f"not a valid ClassifiedWorkItem: {loc}: {first['msg']} ({count} error(s))"
