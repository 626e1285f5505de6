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
CREATE TABLE IF NOT EXISTS ops.redrives (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL,
    origin_offset    bigint      NOT NULL,
    redriven_at      timestamptz NOT NULL DEFAULT now(),
    redriven_by      text        NOT NULL,
    new_partition    integer     NOT NULL,   -- where the re-published record landed
    new_offset       bigint      NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset),
    UNIQUE (origin_topic, origin_partition, origin_offset)  -- each origin record once
);
"""
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
    """The redrives of these dead letters, or of any dead letter of the same origin records."""
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
             JOIN unnest($4::text[], $5::int[], $6::bigint[]) AS g(t, p, o)
               ON r.origin_topic = g.t AND r.origin_partition = g.p AND r.origin_offset = g.o""",
        dlq_topic,
        [r.partition for r in records],
        [r.offset for r in records],
        [o.topic for o in origins],
        [o.partition for o in origins],
        [o.offset for o in origins],
    )
    return [
        RedriveMark(
            dlq_topic=row["dlq_topic"],
            dead_letter=Position(row["dlq_partition"], row["dlq_offset"]),
            origin=Origin(row["origin_topic"], row["origin_partition"], row["origin_offset"]),
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
         origin.offset, by, published.partition, published.offset)
        for record, published in redriven
        if (origin := record.origin) is not None
    ]  # fmt: skip
    if rows:
        await conn.executemany(
            """INSERT INTO ops.redrives (dlq_topic, dlq_partition, dlq_offset, origin_topic,
                   origin_partition, origin_offset, redriven_by, new_partition, new_offset)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT DO NOTHING""",
            rows,
        )
