"""`ops.redrives`: every dead letter the console redrove, so none is re-published twice. The SQL,
in one place; the console owns this table (the only one it writes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg

from services.console.redrive import DeadLetterRecord, Origin, Position, RedriveMark
from shared.infra.db import Executor

#: Applied at every console start (idempotent), under its own advisory lock.
SCHEMA: Final = """
CREATE SCHEMA IF NOT EXISTS ops;

-- One row per dead letter redriven; a row is written in the same transaction that holds the
-- topic's redrive lock across the publish, and committed only after Kafka acknowledged it.
-- An origin is a record, or one item of a batch record: `origin_item` is the item's 0-based index
-- in the record's array, -1 for a whole record. -1 rather than NULL, so the unique key below
-- holds for whole records too (NULLs are distinct to UNIQUE) and lookups compare with plain `=`.
CREATE TABLE IF NOT EXISTS ops.redrives (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL,
    origin_offset    bigint      NOT NULL,
    origin_item      integer     NOT NULL DEFAULT -1 CHECK (origin_item >= -1),
    redriven_at      timestamptz NOT NULL DEFAULT now(),
    redriven_by      text        NOT NULL,
    new_partition    integer     NOT NULL,   -- where the re-published record landed
    new_offset       bigint      NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset),
    -- each origin (record, or item of one) once
    CONSTRAINT redrives_origin_once
        UNIQUE (origin_topic, origin_partition, origin_offset, origin_item)
);

-- A table from before item dead letters: its rows are whole records (-1), and its key was the
-- record alone, which would refuse the second item of a batch. Each change runs only when
-- missing, so once applied this takes no table lock.
DO $$
DECLARE
    old_key name;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'ops'
                     AND table_name = 'redrives' AND column_name = 'origin_item') THEN
        ALTER TABLE ops.redrives
            ADD COLUMN origin_item integer NOT NULL DEFAULT -1 CHECK (origin_item >= -1);
    END IF;
    FOR old_key IN SELECT c.conname FROM pg_constraint c
                    WHERE c.conrelid = 'ops.redrives'::regclass AND c.contype = 'u'
                      AND ARRAY(SELECT a.attname::text FROM pg_attribute a
                                 WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
                                 ORDER BY a.attname)
                          = ARRAY['origin_offset', 'origin_partition', 'origin_topic'] LOOP
        EXECUTE format('ALTER TABLE ops.redrives DROP CONSTRAINT %I', old_key);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'ops.redrives'::regclass
                     AND conname = 'redrives_origin_once') THEN
        ALTER TABLE ops.redrives ADD CONSTRAINT redrives_origin_once
            UNIQUE (origin_topic, origin_partition, origin_offset, origin_item);
    END IF;
END $$;
"""
#: `origin_item` of a whole record (an item's index is never negative).
_WHOLE_RECORD: Final = -1
_SCHEMA_LOCK: Final = 73_012  # shared/infra/db.py's schema lock is 73_011


async def apply_redrive_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


async def lock_topic(conn: Executor, dlq_topic: str) -> None:
    """Serialise redrives of one dead-letter topic until the caller's transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tierline.redrive:' || $1::text))", dlq_topic
    )


async def marks_for(
    conn: Executor, dlq_topic: str, records: Sequence[DeadLetterRecord]
) -> list[RedriveMark]:
    """The redrives of these dead letters, or of any dead letter of the same origins (the same
    record, or the same item of one)."""
    if not records:
        return []
    origins = [r.origin for r in records if r.origin is not None]
    rows = await conn.fetch(
        """SELECT r.* FROM ops.redrives r
             JOIN unnest($2::int[], $3::bigint[]) AS d(p, o)
               ON r.dlq_partition = d.p AND r.dlq_offset = d.o
            WHERE r.dlq_topic = $1
           UNION
           SELECT r.* FROM ops.redrives r
             JOIN unnest($4::text[], $5::int[], $6::bigint[], $7::int[]) AS g(t, p, o, i)
               ON r.origin_topic = g.t AND r.origin_partition = g.p AND r.origin_offset = g.o
              AND r.origin_item = g.i""",
        dlq_topic,
        [r.partition for r in records],
        [r.offset for r in records],
        [o.topic for o in origins],
        [o.partition for o in origins],
        [o.offset for o in origins],
        [_item_column(o) for o in origins],
    )
    return [
        RedriveMark(
            dlq_topic=row["dlq_topic"],
            dead_letter=Position(row["dlq_partition"], row["dlq_offset"]),
            origin=Origin(
                row["origin_topic"],
                row["origin_partition"],
                row["origin_offset"],
                None if row["origin_item"] == _WHOLE_RECORD else row["origin_item"],
            ),
            redriven_at=row["redriven_at"],
            by=row["redriven_by"],
            published=Position(row["new_partition"], row["new_offset"]),
        )
        for row in rows
    ]


async def record_redrives(
    conn: Executor, redriven: Iterable[tuple[DeadLetterRecord, Position]], *, by: str
) -> None:
    """Remember each (dead letter, where its copy landed)."""
    rows = [
        (record.topic, record.partition, record.offset, origin.topic, origin.partition,
         origin.offset, _item_column(origin), by, published.partition, published.offset)
        for record, published in redriven
        if (origin := record.origin) is not None
    ]  # fmt: skip
    if rows:
        await conn.executemany(
            """INSERT INTO ops.redrives (dlq_topic, dlq_partition, dlq_offset, origin_topic,
                   origin_partition, origin_offset, origin_item, redriven_by, new_partition,
                   new_offset)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT DO NOTHING""",
            rows,
        )


def _item_column(origin: Origin) -> int:
    """`origin_item` as stored: the item's index, or -1 for a whole record."""
    return _WHOLE_RECORD if origin.item is None else origin.item
