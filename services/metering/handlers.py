"""Meter a batch: decode → count once in PostgreSQL and record the alerts it raises (one
transaction) → then the offsets commit.

The transaction is read → decide → write, composed here from the store's steps: count the batch
(which also reads the closed periods under the lock) → read the usage of the open periods the
usage cache does not know → decide the alerts (pure: `alerts.decide`) → record them. Its results
come back as a value (`Metered`); the usage cache learns from it only once the transaction has
committed.

A record holds one item or a batch of one client's items (shared.contracts.workitems); metering
works on items. A database outage is waited out with backoff (never dead-lettered). An item
that cannot be metered goes to `<topic>.dlq` with its error and origin, alone, and its
partition keeps flowing: one that breaks the contract or names what the ledger cannot hold is
refused before anything is written; one the database refuses (U+0000 in a text, a value out of
range) fails its batch's transaction, so the batch is split in halves until each such item
stands alone, the others are counted (each half is its own exactly-once transaction) and the
culprit is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.metering import store
from services.metering.alerts import (
    AlertDecision,
    OpenGroup,
    PeriodUsageCache,
    decide,
    open_groups,
)
from services.metering.counting import MeteredItem, metered_item, why_unmeterable
from services.metering.level_alerts import WatchList
from shared.contracts.topics import USAGE_ALERTS
from shared.contracts.workitems import CLASSIFIED_RECORDS
from shared.infra.agreement_view import Agreements
from shared.infra.db import caused_by_data, retrying
from shared.infra.faults import crash_point
from shared.infra.kafka import (
    ItemOrigin,
    batch_size_histogram,
    dead_letter_counter,
    dead_letter_item,
    decode_items,
    json_bytes,
)
from shared.infra.logs import batch_fields

log = logging.getLogger(__name__)

#: An item metering will count, where it came from and what it keeps of it.
Admitted = tuple[ItemOrigin, MeteredItem]


@dataclass(frozen=True)
class Metered:
    """What one committed counting transaction did."""

    #: The items counted for the first time, in batch order (late ones flagged).
    counted: list[MeteredItem]
    #: The alerts recorded with them, and the usage of the periods they added to.
    alerts: AlertDecision
    #: Why no alert of the batch could be worked out, if none could (the count went on).
    unworkable: Exception | None = None
    #: The open periods the batch added billable items to, of clients with an agreement in
    #: force for them.
    groups: tuple[OpenGroup, ...] = ()


class MeteringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # By service line, never by client: a label per client id is a series per client, and
        # any sender could make thousands (the console reads per-client usage from the ledger).
        self.metered = Counter(
            "tierline_metering_items",
            "Items counted (first copies only), by service line ('unclassified' included)",
            ["service_line"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tierline_metering_duplicates", "Copies of items already counted", registry=registry
        )
        self.dead_letters = dead_letter_counter(registry)
        self.batch_size = batch_size_histogram(registry, "metering")
        self.alerts = Counter(
            "tierline_usage_alerts",
            "Usage alerts published (thresholds and service-level warnings)",
            registry=registry,
        )
        self.alert_failures = Counter(
            "tierline_metering_alert_failures",
            "Usage alerts that could not be computed or published (counting went on)",
            registry=registry,
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
        agreements: Agreements,
        metrics: MeteringMetrics,
    ) -> None:
        self.broker = broker
        self.pool = pool
        self.agreements = agreements
        self.metrics = metrics
        #: True when alerts were recorded and not yet published (also at start: a crash may
        #: have left some).
        self.alerts_pending = True
        self.usage_cache = PeriodUsageCache()
        #: The open periods with service levels counted into since the watch's last pass.
        self.level_watch = WatchList()

    def timezone_of(self, client_id: str) -> str:
        agreement = self.agreements.get(client_id)
        return agreement.timezone if agreement is not None else "UTC"

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[MeteredItem]:
        batch = await self.admit(records)
        self.metrics.batch_size.observe(len(batch))
        if not batch:
            return []
        started = time.perf_counter()
        counted = await self.count(batch)
        crash_point("metering.after_commit")  # before the offsets commit: a redelivery follows
        self.metrics.db_seconds.observe(time.perf_counter() - started)
        self.metrics.duplicates.inc(len(batch) - len(counted))
        for line, count in Tally(item.service_line for item in counted).items():
            self.metrics.metered.labels(service_line=line).inc(count)
        if self.alerts_pending:
            await self.publish_alerts()
        return counted

    async def admit(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Admitted]:
        """The items metering can keep, each with what it keeps of it; the others are
        dead-lettered before anything is written."""
        admitted: list[Admitted] = []
        for origin, item in await decode_items(
            self.broker, records, CLASSIFIED_RECORDS, self.metrics.dead_letters
        ):
            problem: BaseException | str | None
            try:
                metered = metered_item(item)
                problem = why_unmeterable(metered, self.timezone_of(metered.client_id))
            except Exception as error:  # whatever the record holds, it must not stop the batch
                problem = error
            if problem is None:
                admitted.append((origin, metered))
            else:
                await self.reject(origin, problem)
        return admitted

    async def count(self, batch: list[Admitted]) -> list[MeteredItem]:
        """Count `batch` in one transaction; if its data makes the transaction fail, count each
        half on its own (recursively), so every item the database refuses ends up alone and
        is dead-lettered while all the others are counted. Halves keep the batch order, so the
        first copy of an item is still the one that counts."""
        items = [item for _, item in batch]
        began = time.monotonic()
        try:
            metered = await retrying(lambda: self.meter(items), what="meter batch", pool=self.pool)
        except Exception as error:
            if not caused_by_data(error):
                raise  # not the records' fault: the batch fails and is redelivered
            if len(batch) == 1:
                await self.reject(batch[0][0], error)
                return []
            log.warning(
                "the database refused a batch's data; isolating the item(s) that cause it",
                extra={**batch_fields([origin[0] for origin, _ in batch]), "error": repr(error)},
            )
            half = len(batch) // 2
            return await self.count(batch[:half]) + await self.count(batch[half:])
        # Committed: now the cache may know, the alerts may be published, and the service-level
        # watch looks at the periods it added to (a set update per client and period).
        self.usage_cache.remember(metered.alerts.usage, time.monotonic(), since=began)
        self.level_watch.note(
            (group.client_id, group.period)
            for group in metered.groups
            if group.agreement.service_levels is not None
        )
        if metered.alerts.alerts:
            self.alerts_pending = True
        self.report_alert_failures(metered)
        return metered.counted

    async def meter(self, batch: list[MeteredItem]) -> Metered:
        """One transaction, read → decide → write: count the batch, read the usage of the open
        periods it added to that the cache does not know, decide the alerts, record them (with
        the counts: a crash cannot lose one)."""
        async with self.pool.acquire() as conn, conn.transaction():
            counted = await store.count(conn, batch, timezone_of=self.timezone_of)
            unworkable: Exception | None = None
            groups: list[OpenGroup] = []
            try:
                groups = open_groups(counted, self.agreements.get)
            except Exception as error:  # working an alert out never fails the count
                unworkable = error
            known = self.usage_cache.known((g.key for g in groups), time.monotonic())
            loaded = await store.load_usage(conn, [g.key for g in groups if g.key not in known])
            decision = decide(groups, known=known, loaded=loaded, at=datetime.now(UTC))
            await store.record_alerts(conn, decision.alerts)
        return Metered(counted, decision, unworkable, tuple(groups))

    def report_alert_failures(self, metered: Metered) -> None:
        if metered.unworkable is not None:
            log.error(
                "usage alerts of a batch could not be worked out; skipped",
                exc_info=metered.unworkable,
            )
            self.metrics.alert_failures.inc()
        for failure in metered.alerts.failures:
            log.error(
                "usage alerts could not be worked out; skipped",
                exc_info=failure.error,
                extra={"client_id": failure.client_id, "period": failure.period.key},
            )
            self.metrics.alert_failures.inc()

    async def reject(self, origin: ItemOrigin, error: BaseException | str) -> None:
        await dead_letter_item(self.broker, origin, error)
        self.metrics.dead_letters.labels(topic=origin[0].topic).inc()

    async def publish_alerts(self) -> None:
        """Publish recorded alerts (an outbox: a crash before this republishes them later).

        Never fails the batch: an alert that cannot be published now (Kafka away, or the alert
        itself refused) stays pending and is tried again after the next batch."""
        try:
            pending = await store.unpublished_alerts(self.pool)
        except Exception as error:
            log.warning("pending alerts not read; later", extra={"error": repr(error)})
            return
        sends: list[Awaitable[Any]] = []
        for client, _, _, body in pending:  # pipelined: all sent, then all acknowledgements
            try:
                sends.append(
                    await self.broker.publish(
                        json_bytes(body),
                        USAGE_ALERTS,
                        key=client.encode(),
                        no_confirm=True,
                        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
                    )
                )
            except Exception as error:
                sends.append(_failed(error))
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        published = []
        for (client, period, threshold, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "usage alert not published; later",
                    extra={"client_id": client, "period": period, "error": repr(outcome)},
                )
                self.metrics.alert_failures.inc()
            else:
                published.append((client, period, threshold))
        try:
            await store.mark_alerts_published(self.pool, published)
        except Exception as error:  # published twice at worst: alert ids make that harmless
            log.warning("alerts not marked published; later", extra={"error": repr(error)})
            return
        self.metrics.alerts.inc(len(published))
        self.alerts_pending = len(published) < len(pending)


async def _failed(error: BaseException) -> None:
    raise error
