"""Billing's use cases over its store, the ledger and Kafka: the layer the HTTP API calls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

import asyncpg
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
)
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.billing import notes_store, store
from services.billing.barrier import wait_until_metered
from services.billing.closing import CloseOutcome, close_for_client
from services.billing.invoices import CLOUDEVENT_HEADERS, cloudevent
from services.billing.noting import issue_due_notes
from services.billing.reconcile import to_republish
from shared.contracts.invoice import Invoice, PeriodClose
from shared.contracts.reclassification import Note, NoteIssued
from shared.contracts.topics import AGREEMENTS, INVOICES
from shared.contracts.wire import CloudEvent
from shared.domain.agreement.agreement import Agreement, wire_bytes
from shared.domain.periods import Period, is_close_due, period_bounds, period_of
from shared.infra.db import Executor, retrying
from shared.infra.faults import crash_point
from shared.infra.kafka import CompactedView, json_bytes
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.locks import lock_for_close
from shared.ledger.reads import clients_owed_notes, clients_with_usage_between

log = logging.getLogger(__name__)

#: A month in any timezone lies within this margin of the same month in UTC.
_ZONE_MARGIN = timedelta(hours=15)
#: How far back automatic closing looks for periods that were never closed.
_AUTO_CLOSE_LOOKBACK_MONTHS = 24


#: How long one publication may wait for Kafka's acknowledgement.
PUBLISH_TIMEOUT_SECONDS: Final = 15.0
#: A row Kafka refused (not an outage: the record itself) is tried again this much later, so a
#: cause fixed meanwhile (a larger broker limit) still lets it out, without a retry storm.
REFUSED_RETRY_SECONDS: Final = 600.0
#: Kafka errors that are an outage or the producer's state, never the record's fault.
_TRANSIENT: Final = (
    TimeoutError,
    KafkaTimeoutError,
    KafkaConnectionError,
    ProducerClosed,
    OutOfOrderSequenceNumber,
)


class KafkaUnavailable(Exception):
    pass


def is_transient(error: BaseException) -> bool:
    """Whether a publication failed for a reason that retrying cures (an outage, a leader
    moving, a timeout) rather than because Kafka refuses this record (its size, its topic)."""
    if isinstance(error, _TRANSIENT):
        return True
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))


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
        self.refused = Counter(
            "tierline_billing_outbox_refused",
            "Outbox rows Kafka refused or that could not be encoded (each try; others go on)",
            ["topic", "error_type"],
            registry=registry,
        )
        self.notes = Counter(
            "tierline_billing_notes_issued",
            "Notes issued for reclassifications in closed periods (SPEC §10)",
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
        kafka: KafkaConnection,
        barrier_timeout: float,
        metrics: BillingMetrics,
        close_concurrency: int = 1,
    ) -> None:
        self.pool = pool
        #: How many clients a close works on at once: each closes in its own transaction under
        #: its own lock, so they never wait for each other.
        self.close_concurrency = close_concurrency
        self.broker = broker
        self.kafka = kafka
        self.barrier_timeout = barrier_timeout
        self.metrics = metrics
        self._publish_lock = asyncio.Lock()
        #: Outbox rows refused, by (topic, id), with the monotonic time they may be tried again.
        self._refused: dict[tuple[str, Hashable], float] = {}

    # --- agreements ---------------------------------------------------------------------------

    async def put_agreement(self, agreement: Agreement) -> Agreement:
        async with self.pool.acquire() as conn:
            stored = await store.store_agreement(conn, agreement)
        try:
            await self._publish_agreement(stored)
        except Exception as error:
            if not is_transient(error):
                self._refuse((AGREEMENTS, (stored.client_id, stored.version)), error)
            raise KafkaUnavailable(
                f"stored as version {stored.version} but Kafka cannot take it now; "
                "it will be published when Kafka returns"
            ) from error
        return stored

    async def _publish_agreement(self, agreement: Agreement) -> None:
        assert agreement.version is not None
        await asyncio.wait_for(
            self.broker.publish(
                wire_bytes(agreement),
                AGREEMENTS,
                key=agreement.client_id.encode(),
                headers={"content-type": "application/json"},
            ),
            timeout=PUBLISH_TIMEOUT_SECONDS,
        )
        await store.mark_agreement_published(self.pool, agreement.client_id, agreement.version)
        self.metrics.published.labels(topic=AGREEMENTS).inc()

    async def reconcile_agreements(self, on_topic: CompactedView[bytes]) -> int:
        """Republish every current agreement the `agreements` topic no longer carries (a record
        written under its key by someone else, soon to be all compaction keeps); the number
        republished. Read the topic and the store, decide (`reconcile.to_republish`), publish."""
        await on_topic.caught_up(timeout=PUBLISH_TIMEOUT_SECONDS)
        current = await store.current_agreements(self.pool)
        stale = to_republish(current, {client: on_topic.get(client) for client in current})
        republished = 0
        async with self._publish_lock:
            for agreement in stale:
                key = (AGREEMENTS, (agreement.client_id, agreement.version))
                outcome = await self._attempt(key, self._publish_agreement(agreement))
                if outcome is None:
                    break  # an outage: the next pass retries
                republished += outcome
        if republished:
            log.warning(
                "republished agreements the topic no longer carried",
                extra={"count": republished, "client_id": ",".join(a.client_id for a in stale)},
            )
        return republished

    # --- closing ------------------------------------------------------------------------------

    async def close(self, period: Period, *, client_id: str | None, now: datetime) -> PeriodClose:
        steps = _Stopwatch()
        await wait_until_metered(self.kafka, timeout=self.barrier_timeout)
        steps.lap("barrier")
        clients = [client_id] if client_id else await self._clients_for(period)
        steps.lap("clients")
        await self._close_clients(clients, period, now)
        steps.lap("close")
        crash_point("billing.after_close_commit")
        await self.publish_outbox()
        steps.lap("publish")
        answer = PeriodClose(
            period=period.key,
            invoices=tuple(await store.invoices(self.pool, client_id=client_id, period=period.key)),
            unbilled=tuple(await store.unbilled(self.pool, period.key, client_id)),
        )
        steps.lap("answer")
        log.info(
            f"closed {period.key} for {len(clients)} client(s) in {steps.total_ms} ms",
            extra={
                "period": period.key,
                "duration_ms": steps.total_ms,
                "steps_ms": steps.laps,
                "cpu_ms": steps.cpu_ms,
            },
        )
        return answer

    async def _close_clients(self, clients: Sequence[str], period: Period, now: datetime) -> None:
        """Close `period` for every client, `close_concurrency` at a time. A client whose close
        fails for good fails the whole call, as the first error of a sequence would; the
        closes already committed stand (each is one transaction), and a retry skips them."""
        waiting = iter(clients)

        async def worker() -> None:
            for client in waiting:
                await self._close_client(client, period, now)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.close_concurrency, len(clients))):
                group.create_task(worker())

    async def _close_client(self, client_id: str, period: Period, now: datetime) -> CloseOutcome:
        async def attempt() -> CloseOutcome:
            async with self.pool.acquire() as conn:
                return await close_for_client(conn, client_id=client_id, period=period, now=now)

        with self.metrics.db_seconds.labels(operation="close").time():
            outcome = await retrying(attempt, what="close period", pool=self.pool)
        if outcome.newly_closed:
            kind = "invoiced" if outcome.invoice else "unbilled"
            self.metrics.periods_closed.labels(outcome=kind).inc()
            if outcome.invoice:
                self.metrics.invoice_total.labels(currency=outcome.invoice.currency).inc(
                    float(outcome.invoice.total)
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
            await wait_until_metered(self.kafka, timeout=self.barrier_timeout)
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

    # --- notes --------------------------------------------------------------------------------

    async def issue_notes(self, client_id: str | None = None) -> int:
        """Issue the notes reclassifications owe (of one client, or of every client owed one),
        each client under its close lock, then publish them; the number issued."""
        clients = [client_id] if client_id else await clients_owed_notes(self.pool)
        issued = 0
        for client in clients:

            async def attempt(client: str = client) -> int:
                async with self.pool.acquire() as conn, conn.transaction():
                    await lock_for_close(conn, client)
                    return len(await issue_due_notes(conn, client, utcnow()))

            count = await retrying(attempt, what="issue notes", pool=self.pool)
            if count:
                log.info(f"issued {count} note(s)", extra={"client_id": client})
            issued += count
        if issued:
            self.metrics.notes.inc(issued)
            await self.publish_outbox()
        return issued

    async def notes(self, *, client_id: str | None, period: str | None) -> list[Note]:
        return await notes_store.notes(self.pool, client_id=client_id, period=period)

    async def note(self, note_id: str) -> Note | None:
        return await notes_store.note(self.pool, note_id)

    # --- invoices -----------------------------------------------------------------------------

    async def invoices(self, *, client_id: str | None, period: str | None) -> list[Invoice]:
        return await store.invoices(self.pool, client_id=client_id, period=period)

    async def invoice(self, invoice_id: str) -> Invoice | None:
        return await store.invoice(self.pool, invoice_id)

    async def publish_outbox(self) -> int:
        """Publish every stored but unpublished agreement, invoice and note, exactly as stored;
        the number published.

        Each row on its own (SPEC §12): a row Kafka refuses — too large, or any error that is
        the record's rather than an outage — is logged, counted in
        `tierline_billing_outbox_refused_total` and tried again only after
        REFUSED_RETRY_SECONDS, while every other row goes out. An outage ends the pass quietly;
        the next pass retries. Agreements and invoices are published independently.

        An invoice is fixed in the database before it is published, so a crash between the
        two republishes the same event (same id, same content) — consumers drop the copy.
        """
        async with self._publish_lock:
            return (
                await self._publish_agreements()
                + await self._publish_invoices()
                + await self._publish_notes()
            )

    async def _publish_agreements(self) -> int:
        sent = 0
        for client_id, version, agreement in await store.unpublished_agreements(self.pool):
            key = (AGREEMENTS, (client_id, version))
            if not self._may_try(key):
                continue
            if agreement is None:  # stored before today's bounds and no longer valid
                self._refuse(key, ValueError("the stored agreement is no longer valid"))
                continue
            outcome = await self._attempt(key, self._publish_agreement(agreement))
            if outcome is None:
                return sent  # an outage: the next pass retries
            sent += outcome
        return sent

    async def _publish_invoices(self) -> int:
        return await self._publish_events(
            "invoices", store.unpublished_invoices, store.mark_invoices_published, _invoice_event
        )

    async def _publish_notes(self) -> int:
        return await self._publish_events(
            "notes",
            notes_store.unpublished_notes,
            notes_store.mark_notes_published,
            _note_event,
        )

    async def _publish_events(
        self,
        what: str,
        unpublished: Unpublished[E],
        mark_published: Callable[[Executor, list[str]], Awaitable[None]],
        event: Callable[[E], CloudEvent[Any]],
    ) -> int:
        """Publish an outbox of CloudEvents on `billing.invoices`, batch by batch, each row on
        its own; a stored body that is not a valid document is refused like a record Kafka
        refuses (held back and counted)."""
        sent = 0
        while True:
            held_back = [
                str(ident)
                for (topic, ident), until in self._refused.items()
                if topic == INVOICES and until > time.monotonic()
            ]
            batch = await unpublished(self.pool, exclude=held_back)
            if not batch:
                return sent
            outcomes = await asyncio.gather(
                *(
                    self._attempt((INVOICES, ident), self._send_event(what, document, event))
                    for ident, document in batch
                )
            )
            published = [
                ident for (ident, _), outcome in zip(batch, outcomes, strict=True) if outcome
            ]
            await mark_published(self.pool, published)
            self.metrics.published.labels(topic=INVOICES).inc(len(published))
            sent += len(published)
            if None in outcomes:
                return sent  # an outage: the next pass retries

    async def _send_event(
        self, what: str, document: E | None, event: Callable[[E], CloudEvent[Any]]
    ) -> None:
        if document is None:  # refused: held back and counted, like a record Kafka refuses
            raise ValueError(f"a stored row of {what} is not a valid document")
        envelope = event(document)
        await asyncio.wait_for(
            self.broker.publish(
                json_bytes(envelope.model_dump(mode="json")),
                INVOICES,
                key=envelope.subject.encode(),
                headers=dict(CLOUDEVENT_HEADERS),
            ),
            timeout=PUBLISH_TIMEOUT_SECONDS,
        )

    async def _attempt(self, key: tuple[str, Hashable], publication: Awaitable[None]) -> int | None:
        """1 when published, 0 when Kafka refused the row (held back), None on an outage."""
        try:
            await publication
        except Exception as error:
            if is_transient(error):
                log.warning(
                    f"{key[0]} outbox: Kafka unavailable; will retry",
                    extra={"error": repr(error)},
                )
                return None
            self._refuse(key, error)
            return 0
        self._refused.pop(key, None)
        return 1

    def _may_try(self, key: tuple[str, Hashable]) -> bool:
        return self._refused.get(key, 0.0) <= time.monotonic()

    def _refuse(self, key: tuple[str, Hashable], error: BaseException) -> None:
        topic, ident = key
        self._refused[key] = time.monotonic() + REFUSED_RETRY_SECONDS
        self.metrics.refused.labels(topic=topic, error_type=type(error).__name__).inc()
        log.error(
            f"{topic} outbox: cannot publish {ident}; publishing the others, "
            f"retrying it in {REFUSED_RETRY_SECONDS:.0f} s",
            extra={"error": repr(error)[:500], "error_type": type(error).__name__},
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


E = TypeVar("E", Invoice, Note)


class Unpublished(Protocol[E]):
    async def __call__(
        self, conn: Executor, *, exclude: Sequence[str] = ..., limit: int = ...
    ) -> list[tuple[str, E | None]]: ...


def _invoice_event(invoice: Invoice) -> CloudEvent[Any]:
    return cloudevent(invoice)


def _note_event(note: Note) -> CloudEvent[Any]:
    return NoteIssued.of(note)


class _Stopwatch:
    """How long each step of a long piece of work took (ms), and the process's CPU time over
    it (whether the work waited or computed), for its log line."""

    def __init__(self) -> None:
        self._started = self._last = time.monotonic()
        self._cpu_started = time.process_time()
        self.laps: dict[str, int] = {}

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.laps[step] = round((now - self._last) * 1000)
        self._last = now

    @property
    def total_ms(self) -> int:
        return round((self._last - self._started) * 1000)

    @property
    def cpu_ms(self) -> int:
        return round((time.process_time() - self._cpu_started) * 1000)
