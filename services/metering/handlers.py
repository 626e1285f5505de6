"""Meter a batch: decode → count once in PostgreSQL (one transaction) → then the offsets commit.

A database outage is waited out with backoff (never dead-lettered); a message that breaks the
contract goes to `<topic>.dlq` and its partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.metering.alerts import (
    PeriodUsageCache,
    alert_event,
    new_alerts,
    open_period_additions,
    usage_plus,
)
from services.metering.counting import MeteredItem, metered_item
from services.metering.store import (
    mark_alerts_published,
    meter_batch,
    record_alerts,
    unpublished_alerts,
)
from shared.agreements import Agreement
from shared.db import Connection, retrying
from shared.events import USAGE_ALERTS, decode_classified
from shared.faults import crash_point
from shared.kafka import CompactedView, decode_all, json_bytes
from shared.ledger import billable_usage, counts_for_ranges
from shared.periods import Period, period_bounds
from shared.rating import ClassUsage

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
        self.alerts = Counter(
            "tierline_usage_alerts", "Usage threshold alerts published", registry=registry
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
        #: True when alerts were recorded and not yet published (also at start: a crash may
        #: have left some).
        self.alerts_pending = True
        self.usage_cache = PeriodUsageCache()
        #: What this batch's transaction learned about period usage; applied after it commits.
        self.cache_updates: list[tuple[str, tuple[str, str, str], list[ClassUsage]]] = []

    def timezone_of(self, client_id: str) -> str:
        agreement = self.agreements.get(client_id)
        return agreement.timezone if agreement is not None else "UTC"

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[MeteredItem]:
        self.metrics.batch_size.observe(len(records))
        decoded = await decode_all(
            self.broker, records, decode_classified, self.metrics.dead_letters
        )
        batch = [metered_item(item) for item in decoded]
        if not batch:
            return []
        started = time.perf_counter()
        counted = await retrying(self._count(batch), what="meter batch")
        clock = time.monotonic()
        for kind, key, usage in self.cache_updates:  # committed: now the cache may know
            (self.usage_cache.put if kind == "put" else self.usage_cache.load)(key, usage, clock)
        crash_point("metering.after_commit")  # before the offsets commit: a redelivery follows
        self.metrics.db_seconds.observe(time.perf_counter() - started)
        self.metrics.duplicates.inc(len(batch) - len(counted))
        for client, count in Tally(item.client_id for item in counted).items():
            self.metrics.metered.labels(client_id=client).inc(count)
        if self.alerts_pending:
            await self.publish_alerts()
        return counted

    def _count(self, batch: list[MeteredItem]) -> Callable[[], Awaitable[list[MeteredItem]]]:
        async def attempt() -> list[MeteredItem]:
            self.cache_updates = []  # a retried transaction starts over
            return await meter_batch(
                self.pool, batch, timezone_of=self.timezone_of, then=self.record_alerts
            )

        return attempt

    async def record_alerts(self, conn: Connection, counted: list[MeteredItem]) -> None:
        """In the counting transaction: the thresholds this batch made open periods cross."""
        timezones = {
            client: agreement.timezone
            for client in {item.client_id for item in counted}
            if (agreement := self.agreements.get(client)) is not None
        }
        groups = {
            key: added
            for key, added in open_period_additions(counted, timezones).items()
            if (agreement := self.agreements.get(key[0])) is not None
            and agreement.in_force_for(key[1])
        }
        if not groups:
            return
        clock = time.monotonic()
        known: dict[tuple[str, Period], list[ClassUsage]] = {}
        for client, period in groups:
            cached = self.usage_cache.get((client, period.key, timezones[client]), clock)
            if cached is not None:
                known[(client, period)] = cached
        missing = [key for key in groups if key not in known]
        loaded = (
            await counts_for_ranges(
                conn,
                [(c, p.key, *period_bounds(p, timezones[c])) for c, p in missing],
            )
            if missing
            else {}
        )
        now = datetime.now(UTC)
        rows = []
        for (client, period), added in groups.items():
            agreement = self.agreements.get(client)
            assert agreement is not None
            cache_key = (client, period.key, timezones[client])
            if (client, period) in known:
                after = usage_plus(known[(client, period)], added)
                self.cache_updates.append(("put", cache_key, after))
            else:  # read in this transaction: it already holds this batch
                after = billable_usage(loaded[(client, period.key)])
                self.cache_updates.append(("load", cache_key, after))
            for alert in new_alerts(agreement, after, added):
                event = alert_event(agreement, period, alert, after, now)
                rows.append((client, period.key, f"{alert.threshold}:{alert.tier_name}", event))
        if rows:
            await record_alerts(conn, rows)
            self.alerts_pending = True

    async def publish_alerts(self) -> None:
        """Publish recorded alerts (an outbox: a crash before this republishes them later)."""
        pending = await unpublished_alerts(self.pool)
        futures = [
            await self.broker.publish(
                json_bytes(body),
                USAGE_ALERTS,
                key=client.encode(),
                no_confirm=True,
                headers={"content-type": "application/cloudevents+json; charset=utf-8"},
            )
            for client, _, _, body in pending
        ]
        await asyncio.gather(*futures)
        await mark_alerts_published(self.pool, [(c, p, t) for c, p, t, _ in pending])
        self.metrics.alerts.inc(len(pending))
        self.alerts_pending = False
