"""Dead letters of single items taken out of batch records (SPEC §12), redriven on a real broker
and database through the console's own use cases (`DeadLetters`) and `ops.redrives`.

A batch record on `workitems.*` carries several items of one client (a JSON array); when one item
fails, only that item is dead-lettered: its value is the item's own document, its key the
record's, and its `origin_item` header the item's 0-based index in the array. The dead letters
here are written to the `.dlq` topic by hand, with the headers `shared.infra.kafka` writes, so
two of them share an origin record and differ by `origin_item`: each must be redriven once, and
neither may be taken for a copy of the other. A table `ops.redrives` from before item dead
letters is migrated at start, keeping its rows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Final

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from services.console.deadletters import DeadLetterLog, DeadLetters
from services.console.redrive import (
    REDRIVEN_FROM,
    DeadLetterRecord,
    Filter,
    Origin,
    Outcome,
    Position,
)
from services.console.redrive_store import apply_redrive_schema, marks_for, record_redrives
from shared.contracts.topics import WORKITEMS_COMPLETED, dlq
from shared.infra.db import create_pool
from shared.infra.kafka import ensure_topics
from shared.infra.kafka_connection import KafkaConnection
from tests.databases import private_database
from tests.records import completed_record

DLQ: Final = dlq(WORKITEMS_COMPLETED)
BY: Final = "admin:0123abcd"


@pytest.fixture
async def dead_letters(kafka: KafkaConnection, pool: asyncpg.Pool) -> AsyncIterator[DeadLetters]:
    await ensure_topics(kafka, partitions=6)
    await apply_redrive_schema(pool)
    log = DeadLetterLog(kafka)
    await log.start()
    yield DeadLetters(log, pool, CollectorRegistry())
    await log.stop()


def unique_offset() -> int:
    """An origin offset no other test (nor an earlier run on the same database) uses: origins are
    identities in `ops.redrives`, which outlives a test."""
    return 10**15 + uuid.uuid4().int % 10**14


async def write_dead_letters(
    bootstrap: str, letters: Sequence[tuple[bytes, int, int | None]], *, error: str
) -> list[Position]:
    """Write (value, origin offset, origin item) dead letters of workitems.completed, keyed by the
    client, as `shared.infra.kafka` writes them; their positions in the .dlq topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    positions = []
    try:
        for value, origin_offset, origin_item in letters:
            headers = [
                ("error", error.encode()),
                ("error_type", b"RuntimeError"),
                ("origin_topic", WORKITEMS_COMPLETED.encode()),
                ("origin_partition", b"0"),
                ("origin_offset", str(origin_offset).encode()),
                ("origin_timestamp", b"1764000000000"),
            ]
            if origin_item is not None:
                headers.append(("origin_item", str(origin_item).encode()))
            sent = await producer.send_and_wait(DLQ, value, key=b"acme", headers=headers)
            positions.append(Position(sent.partition, sent.offset))
    finally:
        await producer.stop()
    return positions


async def read_at(
    bootstrap: str, topic: str, places: Sequence[Position]
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records at these positions of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        for place in places:
            tp = TopicPartition(topic, place.partition)
            consumer.assign([tp])
            consumer.seek(tp, place.offset)
            records: list[ConsumerRecord[bytes, bytes]] = []
            async with asyncio.timeout(20):
                while not records:
                    batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                    records = batch.get(tp, [])
            assert records[0].offset == place.offset
            found.append(records[0])
    finally:
        await consumer.stop()
    return found


async def test_two_items_of_one_batch_record_are_each_redriven_once(
    dead_letters: DeadLetters, kafka_bootstrap: str
) -> None:
    run = uuid.uuid4().hex[:8]
    batch = [completed_record(f"batch-{run}-{n}", client=f"items-{run}") for n in range(5)]
    origin = unique_offset()
    # Items 0 and 3 of one record failed: each dead letter holds its item's document alone.
    first, fourth = orjson.dumps(batch[0]), orjson.dumps(batch[3])
    positions = await write_dead_letters(
        kafka_bootstrap, [(first, origin, 0), (fourth, origin, 3)], error=f"bug {run}"
    )
    found = await dead_letters.log.read(DLQ, positions)
    assert [found[p].origin for p in positions] == [
        Origin(WORKITEMS_COMPLETED, 0, origin, 0),
        Origin(WORKITEMS_COMPLETED, 0, origin, 3),
    ]

    # One request each: the second finds the first's redrive in ops.redrives, of another item.
    decisions = [
        decision
        for position in positions
        for decision in await dead_letters.redrive(
            DLQ, WORKITEMS_COMPLETED, [position], by=BY, dry_run=False
        )
    ]
    assert [d.outcome for d in decisions] == [Outcome.REDRIVEN, Outcome.REDRIVEN], [
        d.reason for d in decisions
    ]
    landed = [d.published for d in decisions if d.published is not None]
    copies = await read_at(kafka_bootstrap, WORKITEMS_COMPLETED, landed)
    assert [c.value for c in copies] == [first, fourth]  # each item's document, byte for byte
    assert [c.key for c in copies] == [b"acme", b"acme"]
    for copy, position in zip(copies, positions, strict=True):
        headers = dict(copy.headers)
        assert headers[REDRIVEN_FROM] == f"{DLQ}/{position.partition}/{position.offset}".encode()
        assert not {"origin_item", "origin_offset", "error"} & set(headers)

    again = await dead_letters.redrive(DLQ, WORKITEMS_COMPLETED, positions, by=BY, dry_run=False)
    assert [d.outcome for d in again] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert [d.mark.dead_letter for d in again if d.mark] == positions  # each its own redrive

    # The same items dead-lettered once more (a batch redelivered after a failed commit) are the
    # same origins: skipped, naming the item's first redrive.
    copies_again = await write_dead_letters(
        kafka_bootstrap, [(fourth, origin, 3), (first, origin, 0)], error=f"bug {run}"
    )
    third = await dead_letters.redrive(DLQ, WORKITEMS_COMPLETED, copies_again, by=BY, dry_run=False)
    assert [d.outcome for d in third] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert [d.mark.dead_letter for d in third if d.mark] == [positions[1], positions[0]]
    assert "its origin item 3" in (third[0].reason or "")

    listed = await dead_letters.page(DLQ, Filter(error_contains=run), cursor=None, limit=10)
    marks = {e.record.position: e.mark.dead_letter for e in listed.entries if e.mark}
    assert marks == {
        positions[0]: positions[0],
        positions[1]: positions[1],
        copies_again[0]: positions[1],
        copies_again[1]: positions[0],
    }


async def test_a_dead_letter_of_a_whole_record_is_redriven_once(
    dead_letters: DeadLetters, kafka_bootstrap: str
) -> None:
    run = uuid.uuid4().hex[:8]
    value = orjson.dumps(completed_record(f"whole-{run}", client=f"items-{run}"))
    origin = unique_offset()
    [position, copy] = await write_dead_letters(
        kafka_bootstrap, [(value, origin, None), (value, origin, None)], error=f"bug {run}"
    )
    found = await dead_letters.log.read(DLQ, [position])
    assert found[position].origin == Origin(WORKITEMS_COMPLETED, 0, origin, None)

    [done, skipped] = await dead_letters.redrive(
        DLQ, WORKITEMS_COMPLETED, [position, copy], by=BY, dry_run=False
    )
    assert (done.outcome, skipped.outcome) == (Outcome.REDRIVEN, Outcome.SKIPPED), done.reason
    assert done.published is not None
    [landed] = await read_at(kafka_bootstrap, WORKITEMS_COMPLETED, [done.published])
    assert landed.value == value

    again = await dead_letters.redrive(
        DLQ, WORKITEMS_COMPLETED, [copy, position], by=BY, dry_run=False
    )
    assert [d.outcome for d in again] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert "its origin record" in (again[0].reason or "")
    row = await dead_letters.pool.fetchrow(
        "SELECT origin_item FROM ops.redrives WHERE dlq_partition = $1 AND dlq_offset = $2",
        position.partition,
        position.offset,
    )
    assert row is not None and row["origin_item"] == -1


#: `ops.redrives` as the console created it before item dead letters: one origin record once.
_OLD_TABLE: Final = """
CREATE SCHEMA ops;
CREATE TABLE ops.redrives (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL,
    origin_offset    bigint      NOT NULL,
    redriven_at      timestamptz NOT NULL DEFAULT now(),
    redriven_by      text        NOT NULL,
    new_partition    integer     NOT NULL,
    new_offset       bigint      NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset),
    UNIQUE (origin_topic, origin_partition, origin_offset)
);
INSERT INTO ops.redrives (dlq_topic, dlq_partition, dlq_offset, origin_topic, origin_partition,
                          origin_offset, redriven_by, new_partition, new_offset)
VALUES ('workitems.completed.dlq', 0, 1, 'workitems.completed', 0, 7, 'admin:old', 0, 100),
       ('workitems.completed.dlq', 0, 2, 'workitems.completed', 0, 8, 'admin:old', 0, 101);
"""

_UNIQUE_KEYS: Final = """
SELECT array_agg(a.attname::text ORDER BY k.ordinality) AS columns
  FROM pg_constraint c
  CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ordinality)
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
 WHERE c.conrelid = 'ops.redrives'::regclass AND c.contype = 'u'
 GROUP BY c.conname
"""


def item_letter(dlq_offset: int, origin_offset: int, item: int | None) -> DeadLetterRecord:
    headers = [
        ("origin_topic", WORKITEMS_COMPLETED.encode()),
        ("origin_partition", b"0"),
        ("origin_offset", str(origin_offset).encode()),
    ]
    if item is not None:
        headers.append(("origin_item", str(item).encode()))
    return DeadLetterRecord(DLQ, 0, dlq_offset, 0, b"acme", b"{}", tuple(headers))


async def test_an_old_redrives_table_keeps_its_rows_and_then_holds_each_item_once(
    database_url: str,
) -> None:
    async with private_database(database_url, "redrives") as url:
        old, other = await create_pool(url, size=2), await create_pool(url, size=2)
        try:
            await old.execute(_OLD_TABLE)
            # Two consoles start at once: one migrates, the other finds it done.
            await asyncio.gather(apply_redrive_schema(old), apply_redrive_schema(other))
            await apply_redrive_schema(old)  # a later start changes nothing

            kept = await marks_for(old, DLQ, [item_letter(1, 7, None), item_letter(2, 8, None)])
            assert sorted((m.dead_letter, m.origin, m.by) for m in kept) == [
                (Position(0, 1), Origin(WORKITEMS_COMPLETED, 0, 7), "admin:old"),
                (Position(0, 2), Origin(WORKITEMS_COMPLETED, 0, 8), "admin:old"),
            ]

            # Items 0 and 3 of the record at offset 7, whose whole-record redrive is kept.
            items = [item_letter(3, 7, 0), item_letter(4, 7, 3)]
            async with old.acquire() as conn:
                await record_redrives(
                    conn, [(r, Position(1, 200 + r.offset)) for r in items], by=BY
                )
            marks = await marks_for(old, DLQ, items)
            assert {(m.dead_letter, m.origin.item) for m in marks} == {
                (Position(0, 3), 0),
                (Position(0, 4), 3),
            }
            insert = """INSERT INTO ops.redrives (dlq_topic, dlq_partition, dlq_offset,
                            origin_topic, origin_partition, origin_offset, origin_item,
                            redriven_by, new_partition, new_offset)
                        VALUES ($1, 0, $2, $3, 0, 7, $4, 'admin:x', 0, 1)"""
            for dlq_offset, item in ((5, 3), (6, -1)):  # item 3 again, the whole record again
                with pytest.raises(asyncpg.UniqueViolationError):
                    await old.execute(insert, DLQ, dlq_offset, WORKITEMS_COMPLETED, item)
            with pytest.raises(asyncpg.CheckViolationError):
                await old.execute(insert, DLQ, 9, WORKITEMS_COMPLETED, -2)
            assert await old.fetchval("SELECT count(*) FROM ops.redrives") == 4
            keys = [row["columns"] for row in await old.fetch(_UNIQUE_KEYS)]
            assert keys == [["origin_topic", "origin_partition", "origin_offset", "origin_item"]]
        finally:
            await old.close()
            await other.close()
