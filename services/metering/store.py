"""Metering's SQL, in one place: count a batch exactly once, in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.metering.counting import MeteredItem, first_copies, flag_late, slot_deltas
from shared.db import Connection
from shared.ledger import LOCK_FOR_METERING

#: (client_id, period, threshold, CloudEvent body) of one usage alert.
AlertRow = tuple[str, str, str, dict[str, Any]]

_INSERT_ITEMS = """
INSERT INTO metering.items (client_id, item_id, completed_at, service_line, complexity, units,
                            rule_id, agreement_version, late, received_at, metered_at)
SELECT *, clock_timestamp() FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                     $5::text[], $6::int[], $7::text[], $8::int[], $9::bool[], $10::timestamptz[])
ON CONFLICT (client_id, item_id) DO NOTHING
RETURNING client_id, item_id
"""

_ADD_TO_SLOTS = """
INSERT INTO metering.usage_slots AS s (client_id, slot, service_line, complexity, items, units,
                                       handling_seconds, late_items)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
ON CONFLICT (client_id, slot, service_line, complexity) DO UPDATE
   SET items = s.items + excluded.items,
       units = s.units + excluded.units,
       handling_seconds = s.handling_seconds + excluded.handling_seconds,
       late_items = s.late_items + excluded.late_items
"""


async def meter_batch(
    pool: asyncpg.Pool,
    batch: list[MeteredItem],
    *,
    timezone_of: Callable[[str], str],
    then: Callable[[Connection, list[MeteredItem]], Awaitable[None]] | None = None,
) -> list[MeteredItem]:
    """Count every item not counted before; return those that were new.

    The dedupe insert and the counter update commit together or not at all: a key is never
    claimed without its counts (a crash between them would under-count forever). `then` runs in
    the same transaction with the newly counted items (alerts are recorded there, so a crash
    cannot lose one).
    """
    # Sorted by key so that concurrent writers claim keys in one order and cannot deadlock.
    candidates = sorted(first_copies(batch), key=lambda item: item.key)
    if not candidates:
        return []
    clients = sorted({item.client_id for item in candidates})
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_FOR_METERING)
        closed_rows = await conn.fetch(
            """SELECT client_id, period FROM billing.closed_periods
                WHERE client_id = ANY($1::text[])""",
            clients,
        )
        closed = {(r["client_id"], r["period"]) for r in closed_rows}
        items = flag_late(candidates, timezone_of=timezone_of, closed=closed)
        inserted = await conn.fetch(
            _INSERT_ITEMS,
            [i.client_id for i in items],
            [i.item_id for i in items],
            [i.completed_at for i in items],
            [i.service_line for i in items],
            [i.complexity for i in items],
            [i.units for i in items],
            [i.rule_id for i in items],
            [i.agreement_version for i in items],
            [i.late for i in items],
            [i.received_at for i in items],
        )
        new_keys = {(r["client_id"], r["item_id"]) for r in inserted}
        new_items = [i for i in items if i.key in new_keys]
        deltas = slot_deltas(new_items)
        if deltas:
            await conn.execute(
                _ADD_TO_SLOTS,
                [d.client_id for d in deltas],
                [d.slot for d in deltas],
                [d.service_line for d in deltas],
                [d.complexity for d in deltas],
                [d.items for d in deltas],
                [d.units for d in deltas],
                [d.handling_seconds for d in deltas],
                [d.late_items for d in deltas],
            )
        if then is not None and new_items:
            await then(conn, new_items)
    return new_items


async def record_alerts(conn: Connection, alerts: list[AlertRow]) -> None:
    """Remember (client, period, threshold) alerts; one that exists already is not raised twice."""
    await conn.executemany(
        """INSERT INTO metering.alerts (client_id, period, threshold, body) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        alerts,
    )


async def unpublished_alerts(pool: asyncpg.Pool) -> list[AlertRow]:
    rows = await pool.fetch(
        """SELECT client_id, period, threshold, body FROM metering.alerts
            WHERE NOT published ORDER BY created_at LIMIT 1000"""
    )
    return [(r["client_id"], r["period"], r["threshold"], r["body"]) for r in rows]


async def mark_alerts_published(pool: asyncpg.Pool, keys: list[tuple[str, str, str]]) -> None:
    await pool.executemany(
        """UPDATE metering.alerts SET published = true
            WHERE client_id = $1 AND period = $2 AND threshold = $3""",
        keys,
    )
