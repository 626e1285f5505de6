"""Meter a batch: decode → count once in PostgreSQL (one transaction) → then the offsets commit.

A database outage is waited out with backoff (never dead-lettered). A record that cannot be
metered goes to `<topic>.dlq` with its error and origin, and its partition keeps flowing: one
that breaks the contract or names what the ledger cannot hold is refused before anything is
written; one the database refuses (U+0000 in a text, a value out of range) fails its batch's
transaction, so the batch is split in halves until each such record stands alone, the others
are counted (each half is its own exactly-once transaction) and the culprit is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

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
from services.metering.counting import MeteredItem, metered_item, why_unmeterable
from services.metering.store import (
    mark_alerts_published,
    meter_batch,
    record_alerts,
    unpublished_alerts,
)
from shared.agreements import Agreement
from shared.db import Connection, caused_by_data, retrying
from shared.events import USAGE_ALERTS, decode_classified
from shared.faults import crash_point
from shared.kafka import (
    CompactedView,
    dead_letter,
    dead_letter_counter,
    decode_records,
    json_bytes,
)
from shared.ledger import billable_usage, counts_for_ranges
from shared.logs import batch_fields
from shared.periods import Period, period_bounds
from shared.rating import ClassUsage

log = logging.getLogger(__name__)

#: A record metering will count, with what it keeps of it.
Admitted = tuple[ConsumerRecord[bytes, bytes], MeteredItem]


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
        self.batch_size = Histogram(
            "tierline_metering_batch_size",
            "Records per consumed batch",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
        self.alerts = Counter(
            "tierline_usage_alerts", "Usage threshold alerts published", registry=registry
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
        batch = await self.admit(records)
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
        """The records metering can keep, each with what it keeps of it; the others are
        dead-lettered before anything is written."""
        admitted: list[Admitted] = []
        for record, item in await decode_records(
            self.broker, records, decode_classified, self.metrics.dead_letters
        ):
            problem: BaseException | str | None
            try:
                metered = metered_item(item)
                problem = why_unmeterable(metered, self.timezone_of(metered.client_id))
            except Exception as error:  # whatever the record holds, it must not stop the batch
                problem = error
            if problem is None:
                admitted.append((record, metered))
            else:
                await self.reject(record, problem)
        return admitted

    async def count(self, batch: list[Admitted]) -> list[MeteredItem]:
        """Count `batch` in one transaction; if its data makes the transaction fail, count each
        half on its own (recursively), so every record the database refuses ends up alone and
        is dead-lettered while all the others are counted. Halves keep the batch order, so the
        first copy of an item is still the one that counts."""
        try:
            counted = await retrying(self._count([item for _, item in batch]), what="meter batch")
        except Exception as error:
            if not caused_by_data(error):
                raise  # not the records' fault: the batch fails and is redelivered
            if len(batch) == 1:
                await self.reject(batch[0][0], error)
                return []
            log.warning(
                "the database refused a batch's data; isolating the record(s) that cause it",
                extra={**batch_fields([record for record, _ in batch]), "error": repr(error)},
            )
            half = len(batch) // 2
            return await self.count(batch[:half]) + await self.count(batch[half:])
        clock = time.monotonic()
        for kind, key, usage in self.cache_updates:  # committed: now the cache may know
            (self.usage_cache.put if kind == "put" else self.usage_cache.load)(key, usage, clock)
        self.cache_updates = []
        return counted

    async def reject(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException | str
    ) -> None:
        await dead_letter(self.broker, record, error)
        self.metrics.dead_letters.labels(topic=record.topic).inc()

    def _count(self, batch: list[MeteredItem]) -> Callable[[], Awaitable[list[MeteredItem]]]:
        async def attempt() -> list[MeteredItem]:
            self.cache_updates = []  # a retried transaction starts over
            return await meter_batch(
                self.pool, batch, timezone_of=self.timezone_of, then=self.record_alerts
            )

        return attempt

    async def record_alerts(self, conn: Connection, counted: list[MeteredItem]) -> None:
        """In the counting transaction: the thresholds this batch made open periods cross.

        Working an alert out never fails the count: a group whose alerts cannot be computed is
        logged and skipped (only the database's own failures abort the transaction)."""
        timezones = {
            client: agreement.timezone
            for client in {item.client_id for item in counted}
            if (agreement := self.agreements.get(client)) is not None
        }
        try:
            groups = {
                key: added
                for key, added in open_period_additions(counted, timezones).items()
                if (agreement := self.agreements.get(key[0])) is not None
                and agreement.in_force_for(key[1])
            }
        except Exception:
            log.exception("usage alerts of a batch could not be worked out; skipped")
            self.metrics.alert_failures.inc()
            return
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
            if agreement is None:
                continue
            cache_key = (client, period.key, timezones[client])
            try:
                if (client, period) in known:
                    after = usage_plus(known[(client, period)], added)
                    update = ("put", cache_key, after)
                else:  # read in this transaction: it already holds this batch
                    after = billable_usage(loaded[(client, period.key)])
                    update = ("load", cache_key, after)
                rows += [
                    (
                        client,
                        period.key,
                        f"{alert.threshold}:{alert.tier_name}",
                        alert_event(agreement, period, alert, after, now),
                    )
                    for alert in new_alerts(agreement, after, added)
                ]
            except Exception:
                log.exception(
                    "usage alerts could not be worked out; skipped",
                    extra={"client_id": client, "period": period.key},
                )
                self.metrics.alert_failures.inc()
                continue
            self.cache_updates.append(update)
        if rows:
            await record_alerts(conn, rows)
            self.alerts_pending = True

    async def publish_alerts(self) -> None:
        """Publish recorded alerts (an outbox: a crash before this republishes them later).

        Never fails the batch: an alert that cannot be published now (Kafka away, or the alert
        itself refused) stays pending and is tried again after the next batch."""
        try:
            pending = await unpublished_alerts(self.pool)
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
            await mark_alerts_published(self.pool, published)
        except Exception as error:  # published twice at worst: alert ids make that harmless
            log.warning("alerts not marked published; later", extra={"error": repr(error)})
            return
        self.metrics.alerts.inc(len(published))
        self.alerts_pending = len(published) < len(pending)


async def _failed(error: BaseException) -> None:
    raise error
