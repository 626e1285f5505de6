"""Billing's use cases over its store, the ledger and Kafka: the layer the HTTP API calls."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.billing import store
from services.billing.barrier import wait_until_metered
from services.billing.closing import CloseOutcome, close_for_client
from services.billing.invoices import cloudevent
from shared.agreements import Agreement
from shared.db import retrying
from shared.events import AGREEMENTS, INVOICES
from shared.faults import crash_point
from shared.kafka import json_bytes
from shared.ledger import clients_with_usage_between
from shared.periods import Period, is_close_due, period_bounds, period_of

log = logging.getLogger(__name__)

#: A month in any timezone lies within this margin of the same month in UTC.
_ZONE_MARGIN = timedelta(hours=15)
#: How far back automatic closing looks for periods that were never closed.
_AUTO_CLOSE_LOOKBACK_MONTHS = 24


class KafkaUnavailable(Exception):
    pass


class BillingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.periods_closed = Counter(
            "tierline_billing_periods_closed",
            "Client periods closed",
            ["outcome"],
            registry=registry,
        )
        self.invoice_total = Counter(
            "tierline_billing_invoiced_amount",
            "Sum of issued invoice totals, by currency",
            ["currency"],
            registry=registry,
        )
        self.published = Counter(
            "tierline_billing_published",
            "Messages published from the outbox",
            ["topic"],
            registry=registry,
        )
        self.db_seconds = Histogram(
            "tierline_billing_db_seconds",
            "Database time of one client's period close (read counts, rate, store)",
            ["operation"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )


class BillingService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        bootstrap_servers: str,
        barrier_timeout: float,
        metrics: BillingMetrics,
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.bootstrap_servers = bootstrap_servers
        self.barrier_timeout = barrier_timeout
        self.metrics = metrics
        self._publish_lock = asyncio.Lock()

    # --- agreements ---------------------------------------------------------------------------

    async def put_agreement(self, agreement: Agreement) -> Agreement:
        async with self.pool.acquire() as conn:
            stored = await store.store_agreement(conn, agreement)
        try:
            await self._publish_agreement(stored)
        except (KafkaError, TimeoutError) as error:
            raise KafkaUnavailable(
                f"stored as version {stored.version} but Kafka cannot take it now; "
                "it will be published when Kafka returns"
            ) from error
        return stored

    async def agreement(self, client_id: str) -> Agreement | None:
        return await store.current_agreement(self.pool, client_id)

    async def _publish_agreement(self, agreement: Agreement) -> None:
        assert agreement.version is not None
        await asyncio.wait_for(
            self.broker.publish(
                json_bytes(agreement.to_wire()),
                AGREEMENTS,
                key=agreement.client_id.encode(),
                headers={"content-type": "application/json"},
            ),
            timeout=15,
        )
        await store.mark_agreement_published(self.pool, agreement.client_id, agreement.version)
        self.metrics.published.labels(topic=AGREEMENTS).inc()

    # --- closing ------------------------------------------------------------------------------

    async def close(
        self, period: Period, *, client_id: str | None, now: datetime
    ) -> dict[str, Any]:
        await wait_until_metered(self.bootstrap_servers, timeout=self.barrier_timeout)
        clients = [client_id] if client_id else await self._clients_for(period)
        for client in clients:
            await self._close_client(client, period, now)
        crash_point("billing.after_close_commit")
        await self.publish_outbox()
        return {
            "period": period.key,
            "invoices": await store.invoices(self.pool, client_id=client_id, period=period.key),
            "unbilled": await store.unbilled(self.pool, period.key, client_id),
        }

    async def _close_client(self, client_id: str, period: Period, now: datetime) -> CloseOutcome:
        async def attempt() -> CloseOutcome:
            async with self.pool.acquire() as conn:
                return await close_for_client(conn, client_id=client_id, period=period, now=now)

        with self.metrics.db_seconds.labels(operation="close").time():
            outcome = await retrying(attempt, what="close period")
        if outcome.newly_closed:
            kind = "invoiced" if outcome.invoice else "unbilled"
            self.metrics.periods_closed.labels(outcome=kind).inc()
            if outcome.invoice:
                self.metrics.invoice_total.labels(currency=outcome.invoice["currency"]).inc(
                    float(Decimal(outcome.invoice["total"]))
                )
            log.info(
                f"closed {period.key} for {client_id}: {kind}",
                extra={"client_id": client_id, "period": period.key},
            )
        return outcome

    async def _clients_for(self, period: Period) -> list[str]:
        """Every client with an agreement in force for the period or with usage in it."""
        agreements = await store.current_agreements(self.pool)
        in_force = {c for c, a in agreements.items() if a.in_force_for(period)}
        start, end = period_bounds(period, "UTC")
        with_usage = await clients_with_usage_between(
            self.pool, start - _ZONE_MARGIN, end + _ZONE_MARGIN
        )
        return sorted(in_force | set(with_usage))

    async def auto_close(self, *, now: datetime, grace_hours: float) -> int:
        """Close every period whose end plus grace has passed, for each client with an agreement."""
        closed = 0
        agreements = await store.current_agreements(self.pool)
        grace = timedelta(hours=grace_hours)
        for client_id, agreement in agreements.items():
            # A backdated agreement gets the same grace from the moment billing learned of it:
            # items for those periods are still on their way, and closing now would make them late.
            known_since = await store.first_agreement_at(self.pool, client_id)
            if known_since is None or known_since + grace > now:
                continue
            due = [
                p
                for p in self._candidate_periods(agreement, now)
                if is_close_due(p, agreement.timezone, grace_hours, now)
            ]
            if not due:
                continue
            async with self.pool.acquire() as conn:
                done = {r["period"] for r in await store.closed_periods_of(conn, client_id)}
            todo = [p for p in due if p.key not in done]
            if not todo:
                continue
            await wait_until_metered(self.bootstrap_servers, timeout=self.barrier_timeout)
            for period in todo:
                outcome = await self._close_client(client_id, period, now)
                closed += 1 if outcome.newly_closed else 0
        if closed:
            await self.publish_outbox()
        return closed

    @staticmethod
    def _candidate_periods(agreement: Agreement, now: datetime) -> list[Period]:
        last = period_of(now, agreement.timezone)
        first = last
        for _ in range(_AUTO_CLOSE_LOOKBACK_MONTHS):
            first = first.previous()
        if agreement.effective_from is not None:
            start = Period(agreement.effective_from.year, agreement.effective_from.month)
            first = max(first, start)
        periods = []
        period = first
        while period <= last:
            periods.append(period)
            period = period.next()
        return periods

    # --- invoices -----------------------------------------------------------------------------

    async def invoices(self, *, client_id: str | None, period: str | None) -> list[dict[str, Any]]:
        return await store.invoices(self.pool, client_id=client_id, period=period)

    async def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        return await store.invoice(self.pool, invoice_id)

    async def publish_outbox(self) -> int:
        """Publish every stored but unpublished invoice and agreement, exactly as stored.

        An invoice is fixed in the database before it is published, so a crash between the
        two republishes the same event (same id, same content) — consumers drop the copy.
        """
        async with self._publish_lock:
            sent = 0
            for agreement in await store.unpublished_agreements(self.pool):
                await self._publish_agreement(agreement)
                sent += 1
            while batch := await store.unpublished_invoices(self.pool):
                futures = [
                    await self.broker.publish(
                        json_bytes(cloudevent(invoice)),
                        INVOICES,
                        key=invoice["client_id"].encode(),
                        headers={
                            "content-type": "application/cloudevents+json; charset=utf-8",
                            "ce_id": invoice["invoice_id"],
                        },
                        no_confirm=True,
                    )
                    for invoice in batch
                ]
                await asyncio.gather(*futures)
                await store.mark_invoices_published(self.pool, [i["invoice_id"] for i in batch])
                self.metrics.published.labels(topic=INVOICES).inc(len(batch))
                sent += len(batch)
            return sent


def utcnow() -> datetime:
    return datetime.now(UTC)
