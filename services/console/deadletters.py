"""Dead letters over Kafka and their redrive (I/O): read a `<topic>.dlq`, re-publish chosen dead
letters to their origin, and the three use cases the admin API offers — list, show, redrive —
each reading what it needs, deciding in `redrive.py` (pure), then writing.

Redriving twice never publishes twice. A redrive holds the dead-letter topic's lock (a
transaction-scoped PostgreSQL advisory lock) from reading what was already redriven, through the
publish (acks=all), to the insert into `ops.redrives`, committed only after Kafka acknowledged
every record. A crash or a database failure between the publish and the commit leaves no row,
so a later redrive re-publishes those records once more — at worst one extra copy, which
Tierline counts once anyway: metering counts each (client_id, id) once, and an agreement
version is applied once whatever the copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from services.console.redrive import (
    MAX_SCAN,
    DeadLetterRecord,
    Decision,
    Filter,
    Outcome,
    Position,
    RedriveMark,
    mark_of,
    plan,
    republished_headers,
)
from services.console.redrive_store import lock_topic, marks_for, record_redrives
from shared.infra.faults import crash_point
from shared.infra.kafka import partitions_of
from shared.infra.kafka_connection import KafkaConnection

log = logging.getLogger(__name__)

#: How long a read may go without Kafka returning what the offsets say is there.
_READ_STALL_SECONDS: Final = 10.0
#: How long a redrive waits for Kafka to acknowledge its records.
_PUBLISH_TIMEOUT_SECONDS: Final = 30.0


class KafkaUnavailable(Exception):
    """Kafka did not answer a read in time: the request may be retried."""


def record_of(raw: ConsumerRecord[bytes, bytes]) -> DeadLetterRecord:
    """A dead letter as Kafka holds it, from what aiokafka read."""
    return DeadLetterRecord(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        timestamp_ms=raw.timestamp,
        key=raw.key,
        value=raw.value,
        headers=tuple(raw.headers or ()),
    )


class DeadLetterLog:
    """Reads dead-letter topics; re-publishes to their origin topics with acks=all."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Built here, not in __init__: aiokafka binds to the running event loop.
        self._producer = self.kafka.producer(
            client_id="tierline-console-redrive",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=15_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        consumer = self.kafka.consumer(
            client_id="tierline-console-dlq-read",
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",  # retention moved the start: go on from there
        )
        try:
            await consumer.start()
        except (KafkaError, OSError) as error:
            await consumer.stop()
            raise KafkaUnavailable(f"Kafka unavailable: {error}") from error
        try:
            yield consumer
        except KafkaError as error:
            raise KafkaUnavailable(f"Kafka unavailable: {error}") from error
        finally:
            await consumer.stop()

    async def _bounds(self, consumer: AIOKafkaConsumer, topic: str) -> dict[int, tuple[int, int]]:
        try:
            partitions = await partitions_of(self.kafka, topic, attempts=3)
        except RuntimeError as error:  # the topic is gone: ensure_topics creates it at start
            raise KafkaUnavailable(str(error)) from error
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: (starts[tp], ends[tp]) for tp in tps}

    async def _fetch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, end: int
    ) -> list[DeadLetterRecord]:
        """The next records of `tp` (its position is below `end`), those from `end` on left out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READ_STALL_SECONDS
        while True:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            raw = batches.get(tp, [])
            if raw:
                return [record_of(r) for r in raw if r.offset < end]
            if await consumer.position(tp) >= end:
                return []  # nothing left below `end` (the rest was deleted by retention)
            if loop.time() > deadline:
                raise KafkaUnavailable(f"Kafka returned nothing from {tp.topic}/{tp.partition}")

    async def scan(
        self, topic: str, *, start: Position | None, partition: int | None
    ) -> AsyncGenerator[list[DeadLetterRecord], None]:
        """Batches of the topic's records in (partition, offset) order from `start`, up to the
        end each partition had when the scan began; only `partition` when given."""
        async with self._consumer() as consumer:
            bounds = await self._bounds(consumer, topic)
            for p, (begin, end) in sorted(bounds.items()):
                if partition is not None and p != partition:
                    continue
                if start is not None and p < start.partition:
                    continue
                first = max(begin, start.offset) if start and p == start.partition else begin
                if first >= end:
                    continue
                tp = TopicPartition(topic, p)
                consumer.assign([tp])
                consumer.seek(tp, first)
                while await consumer.position(tp) < end:
                    batch = await self._fetch(consumer, tp, end)
                    if batch:
                        yield batch

    async def read(
        self, topic: str, positions: Sequence[Position]
    ) -> dict[Position, DeadLetterRecord]:
        """The records at these positions (a position holding none is left out)."""
        wanted: dict[int, set[int]] = defaultdict(set)
        for position in positions:
            wanted[position.partition].add(position.offset)
        found: dict[Position, DeadLetterRecord] = {}
        async with self._consumer() as consumer:
            bounds = await self._bounds(consumer, topic)
            for p, offsets in sorted(wanted.items()):
                begin, end = bounds.get(p, (0, 0))
                tp = TopicPartition(topic, p)
                consumer.assign([tp])
                for offset in sorted(offsets):
                    if Position(p, offset) in found or not begin <= offset < end:
                        continue
                    # One fetch from here usually holds the following wanted offsets too.
                    consumer.seek(tp, offset)
                    for record in await self._fetch(consumer, tp, end):
                        if record.offset in offsets:
                            found[record.position] = record
        return found

    async def publish(
        self, topic: str, records: Sequence[DeadLetterRecord]
    ) -> list[Position | BaseException]:
        """Send each record's key and value to `topic`; for each, where it landed or why not."""
        assert self._producer is not None, "DeadLetterLog.start() was not awaited"
        futures = []
        for record in records:
            try:
                futures.append(
                    await self._producer.send(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=republished_headers(record),
                    )
                )
            except (KafkaError, ValueError) as error:  # e.g. over the producer's size limit
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(error)
                futures.append(failed)
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_SECONDS):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as error:
            for future in futures:
                future.cancel()
            return [error for _ in records]
        landed: list[Position | BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                landed.append(result)
            else:
                landed.append(Position(result.partition, result.offset))
        return landed


@dataclass(frozen=True)
class ListedDeadLetter:
    record: DeadLetterRecord
    mark: RedriveMark | None


@dataclass(frozen=True)
class Page:
    entries: list[ListedDeadLetter]
    next_cursor: Position | None
    scanned: int


@dataclass(frozen=True)
class RedriveReport:
    decisions: list[Decision]
    next_cursor: Position | None


class DeadLetters:
    """The use cases: list, show and redrive the dead letters of one topic."""

    def __init__(self, log_: DeadLetterLog, pool: asyncpg.Pool, registry: CollectorRegistry):
        self.log = log_
        self.pool = pool
        self.redriven = Counter(
            "tierline_console_redrives",
            "Dead letters chosen for a redrive, by dead-letter topic and outcome",
            ["topic", "outcome"],
            registry=registry,
        )

    async def page(
        self,
        dlq_topic: str,
        chosen: Filter,
        *,
        cursor: Position | None,
        limit: int,
        redriven: bool | None = None,
    ) -> Page:
        """Up to `limit` matching dead letters from `cursor` on, in (partition, offset) order;
        `next_cursor` is the next match's position, or None when there is none."""
        entries: list[ListedDeadLetter] = []
        scanned = 0
        next_cursor: Position | None = None
        async with contextlib.aclosing(
            self.log.scan(dlq_topic, start=cursor, partition=chosen.partition)
        ) as batches:
            async for batch in batches:
                matching = [r for r in batch if chosen.matches(r)]
                marks = await marks_for(self.pool, dlq_topic, matching) if matching else []
                for record in batch:
                    scanned += 1
                    if not chosen.matches(record):
                        continue
                    mark = mark_of(record, marks)
                    if redriven is not None and (mark is not None) != redriven:
                        continue
                    if len(entries) == limit:
                        next_cursor = record.position
                        break
                    entries.append(ListedDeadLetter(record, mark))
                if next_cursor is not None:
                    break
                if scanned >= MAX_SCAN:
                    last = batch[-1]
                    next_cursor = Position(last.partition, last.offset + 1)
                    break
        return Page(entries, next_cursor, scanned)

    async def show(self, dlq_topic: str, position: Position) -> ListedDeadLetter | None:
        found = await self.log.read(dlq_topic, [position])
        record = found.get(position)
        if record is None:
            return None
        marks = await marks_for(self.pool, dlq_topic, [record])
        return ListedDeadLetter(record, mark_of(record, marks))

    async def redrive(
        self,
        dlq_topic: str,
        origin_topic: str,
        chosen: Sequence[Position],
        *,
        by: str,
        dry_run: bool,
    ) -> list[Decision]:
        """Re-publish the chosen dead letters to `origin_topic`, each at most once ever."""
        found = await self.log.read(dlq_topic, chosen)
        async with self.pool.acquire() as conn, conn.transaction():
            if not dry_run:
                await lock_topic(conn, dlq_topic)
            marks = await marks_for(conn, dlq_topic, list(found.values()))
            decisions = plan(chosen, found, marks, dlq_topic=dlq_topic, origin_topic=origin_topic)
            to_publish = [d for d in decisions if d.outcome is None and d.record is not None]
            if dry_run:
                decisions = [
                    Decision(d.position, Outcome.WOULD_REDRIVE, None, d.record)
                    if d.outcome is None
                    else d
                    for d in decisions
                ]
            else:
                records = [d.record for d in to_publish if d.record is not None]
                landed = await self.log.publish(origin_topic, records)
                crash_point("console.after_redrive_publish")  # published, not yet recorded
                published = {
                    record.position: where for record, where in zip(records, landed, strict=True)
                }
                await record_redrives(
                    conn,
                    [
                        (record, where)
                        for record, where in zip(records, landed, strict=True)
                        if isinstance(where, Position)
                    ],
                    by=by,
                )
                decisions = [_settled(d, published) for d in decisions]
        for decision in decisions:
            assert decision.outcome is not None
            self.redriven.labels(topic=dlq_topic, outcome=decision.outcome.value).inc()
        redriven = sum(1 for d in decisions if d.outcome is Outcome.REDRIVEN)
        if redriven and not dry_run:
            log.info(
                "redrove dead letters",
                extra={"topic": dlq_topic, "items": redriven, "status": origin_topic},
            )
        return decisions

    async def redrive_matching(
        self,
        dlq_topic: str,
        origin_topic: str,
        chosen: Filter,
        *,
        cursor: Position | None,
        limit: int,
        by: str,
        dry_run: bool,
    ) -> RedriveReport:
        """Redrive the next `limit` dead letters matching `chosen` from `cursor` on."""
        page = await self.page(dlq_topic, chosen, cursor=cursor, limit=limit)
        positions = [entry.record.position for entry in page.entries]
        decisions = await self.redrive(dlq_topic, origin_topic, positions, by=by, dry_run=dry_run)
        return RedriveReport(decisions, page.next_cursor)


def _settled(decision: Decision, published: dict[Position, Position | BaseException]) -> Decision:
    if decision.outcome is not None:
        return decision
    where = published[decision.position]
    if isinstance(where, Position):
        return Decision(decision.position, Outcome.REDRIVEN, None, decision.record, published=where)
    reason = f"Kafka refused the record: {type(where).__name__}: {where}"
    return Decision(decision.position, Outcome.FAILED, reason, decision.record)
