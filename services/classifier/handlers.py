"""Classify a batch of completed work items: decode → classify (pure) → publish, then ack.

Offsets are committed only after every output message is acknowledged by Kafka, so a crash
replays the batch (metering counts each item once, so a replayed item is harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from services.classifier.rules import classify
from shared.agreements import Agreement
from shared.events import (
    WORKITEMS_CLASSIFIED,
    WORKITEMS_UNCLASSIFIED,
    CompletedWorkItem,
)
from shared.faults import crash_point
from shared.kafka import CompactedView, dead_letter, json_bytes, publish_all

log = logging.getLogger(__name__)


class ClassifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "tierline_classifier_items",
            "Items classified, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "tierline_dead_letters",
            "Messages sent to a dead-letter topic",
            ["topic"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "tierline_classifier_batch_size",
            "Records per consumed batch",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
        self.batch_seconds = Histogram(
            "tierline_classifier_batch_seconds",
            "Time to classify and publish one batch",
            registry=registry,
        )


def classified_message(item: CompletedWorkItem, agreement: Agreement | None) -> tuple[str, bytes]:
    """The topic and body for one item: what the rules decided, and under which version."""
    decision = classify(item, agreement)
    body: dict[str, Any] = item.model_dump(mode="json", exclude_none=True)
    body["agreement_version"] = agreement.version if agreement is not None else None
    if decision is None:
        return WORKITEMS_UNCLASSIFIED, json_bytes(body)
    body["service_line"] = decision.service_line
    body["complexity"] = decision.complexity
    body["rule_id"] = decision.rule_id
    return WORKITEMS_CLASSIFIED, json_bytes(body)


class Classifier:
    def __init__(
        self, broker: KafkaBroker, agreements: CompactedView[Agreement], metrics: ClassifierMetrics
    ) -> None:
        self.broker = broker
        self.agreements = agreements
        self.metrics = metrics

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        with self.metrics.batch_seconds.time():
            self.metrics.batch_size.observe(len(records))
            # Never classify with an agreement older than one already acknowledged to a caller.
            await self.agreements.caught_up()
            out: list[tuple[str, bytes, bytes]] = []
            for record in records:
                try:
                    item = CompletedWorkItem.model_validate_json(record.value or b"")
                except ValidationError as error:
                    await dead_letter(self.broker, record, _contract_error(error))
                    self.metrics.dead_letters.labels(topic=record.topic).inc()
                    continue
                topic, body = classified_message(item, self.agreements.get(item.client_id))
                self.metrics.items.labels(
                    outcome="classified" if topic == WORKITEMS_CLASSIFIED else "unclassified"
                ).inc()
                out.append((topic, item.client_id.encode(), body))
            try:
                await publish_all(self.broker, out, headers={"content-type": "application/json"})
                crash_point("classifier.after_publish")  # before the offsets commit
            except KafkaError as error:
                # Transient: back off, then fail the batch so it is redelivered, never skipped.
                log.warning(
                    "publish failed; the batch will be retried", extra={"error": repr(error)}
                )
                await asyncio.sleep(1.0)
                raise


def _contract_error(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "<message>"
    count = error.error_count()
    return f"not a valid CompletedWorkItem: {loc}: {first['msg']} ({count} error(s))"
