"""Classify a batch of completed work items: decode → classify (pure) → publish, then ack.

A record holds one item or a batch of one client's items (shared.contracts.workitems); the
classified items of a client go out as one record per batch consumed (as few as fit), so
metering pays Kafka's per-record costs per batch, not per item. Offsets are committed only after
every output message is acknowledged by Kafka, so a crash replays the batch (metering counts
each item once, so a replayed item is harmless).

An item that cannot be classified goes to `workitems.completed.dlq` with its error and origin
and the partition moves on: it does not decode, its rules raise, or its classified copy would
be larger than the broker takes. Only that item: the rest of its record is classified. A Kafka
outage fails the batch, which is retried, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.contracts.topics import WORKITEMS_CLASSIFIED, WORKITEMS_UNCLASSIFIED
from shared.contracts.workitems import (
    COMPLETED_RECORDS,
    MAX_RECORD_BYTES,
    CompletedWorkItem,
    encode_record,
    pack_records,
    with_outcome,
)
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.rules import classify
from shared.infra.agreement_view import AgreementView
from shared.infra.faults import crash_point, pause_point
from shared.infra.kafka import (
    ItemOrigin,
    Publisher,
    batch_size_histogram,
    dead_letter_counter,
    dead_letter_item,
    decode_items,
)
from shared.infra.logs import batch_fields

log = logging.getLogger(__name__)


class RecordTooLarge(ValueError):
    """A classified copy larger than `MAX_RECORD_BYTES` (shared.contracts.workitems): the broker
    would refuse it, and a record it refuses would be retried forever, so the item is
    dead-lettered instead. Intake keeps every item well below it; this guards records written by
    anything else."""


class ClassifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "tierline_classifier_items",
            "Items classified, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = dead_letter_counter(registry)
        self.batch_size = batch_size_histogram(registry, "classifier")
        self.batch_seconds = Histogram(
            "tierline_classifier_batch_seconds",
            "Time to classify and publish one batch",
            registry=registry,
        )


def classified_document(item: CompletedWorkItem, agreement: Agreement | None) -> tuple[bytes, bool]:
    """The item's classified document (what the rules decided, under which version), and
    whether the rules placed it (False: unclassified)."""
    decision = classify(item, agreement)
    value = encode_record(
        with_outcome(
            item,
            service_line=decision.service_line if decision else None,
            complexity=decision.complexity if decision else None,
            rule_id=decision.rule_id if decision else None,
            agreement_version=agreement.version if agreement is not None else None,
        )
    )
    return value, decision is not None


def classified_messages(
    item: CompletedWorkItem, agreement: Agreement | None
) -> list[tuple[str, bytes]]:
    """The (topic, body) messages for one item on its own.

    Every outcome goes to `workitems.classified` (an unclassified item without a class), so
    metering sees all copies of an item in one partition in order; an unclassified item is
    also published to `workitems.unclassified` for the people who place it.
    """
    value, placed = classified_document(item, agreement)
    if not placed:
        return [(WORKITEMS_CLASSIFIED, value), (WORKITEMS_UNCLASSIFIED, value)]
    return [(WORKITEMS_CLASSIFIED, value)]


class Classifier:
    def __init__(
        self,
        *,
        broker: KafkaBroker,
        producer: Publisher,
        agreements: AgreementView,
        metrics: ClassifierMetrics,
    ) -> None:
        self.broker = broker  # dead letters
        self.producer = producer  # the classified stream
        self.agreements = agreements
        self.metrics = metrics

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        with self.metrics.batch_seconds.time():
            outcomes: Tally[str] = Tally()
            # Never classify with an agreement older than one already acknowledged to a caller.
            # That check is a round trip to Kafka: it runs while the batch is decoded.
            caught_up = asyncio.ensure_future(self.agreements.caught_up())
            try:
                items = await self.decode(records, outcomes)
            except BaseException:
                caught_up.cancel()
                raise
            await caught_up
            self.metrics.batch_size.observe(len(items))
            # One record per client of the batch (its items in order), as few as fit.
            documents: dict[bytes, list[bytes]] = {}
            out: list[tuple[str, bytes, bytes]] = []
            for origin, item in items:
                key = item.client_id.encode()
                try:
                    body, placed = classified_document(item, self.agreements.get(item.client_id))
                    if len(key) + len(body) > MAX_RECORD_BYTES:
                        raise RecordTooLarge(
                            f"the classified item would be {len(key) + len(body)} bytes,"
                            f" over the {MAX_RECORD_BYTES} bytes a record may have"
                        )
                except Exception as error:  # this item's fault: it alone is dead-lettered
                    await self.reject(origin, error)
                    outcomes["dead_lettered"] += 1
                    continue
                documents.setdefault(key, []).append(body)
                outcomes["classified" if placed else "unclassified"] += 1
                if not placed:
                    out.append((WORKITEMS_UNCLASSIFIED, key, body))
            out += [
                (WORKITEMS_CLASSIFIED, key, record)
                for key, bodies in documents.items()
                for record in pack_records(bodies, limit=MAX_RECORD_BYTES - len(key))
            ]
            await pause_point("classifier.before_publish")  # tests: a batch held in flight
            try:
                await self.producer.send_many(out)
                crash_point("classifier.after_publish")  # before the offsets commit
            except KafkaError as error:
                # Transient: back off, then fail the batch so it is redelivered, never skipped.
                log.warning(
                    "publish failed; the batch will be retried",
                    extra={**batch_fields(records), "error": repr(error)},
                )
                await asyncio.sleep(1.0)
                raise
            for outcome, count in outcomes.items():
                self.metrics.items.labels(outcome=outcome).inc(count)

    async def reject(self, origin: ItemOrigin, error: BaseException) -> None:
        await dead_letter_item(self.broker, origin, error)
        self.metrics.dead_letters.labels(topic=origin[0].topic).inc()

    async def decode(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], outcomes: Tally[str]
    ) -> list[tuple[ItemOrigin, CompletedWorkItem]]:
        """The batch's items with their origins, first copies only; an item (or a record) that
        breaks the contract is dead-lettered."""
        items: list[tuple[ItemOrigin, CompletedWorkItem]] = []
        seen: set[tuple[str, str]] = set()
        for origin, item in await decode_items(
            self.broker, records, COMPLETED_RECORDS, self.metrics.dead_letters
        ):
            if (item.client_id, item.id) in seen:
                # A later copy in the same batch can never count (the first one does), and
                # dropping it here means no failed-then-retried send can put it first.
                outcomes["duplicate"] += 1
                continue
            seen.add((item.client_id, item.id))
            items.append((origin, item))
        return items
