"""Metering's SQL, in one place. A batch is metered in one transaction the handler opens and
composes from these steps (`handlers.Meter.meter`): `count` (lock, closed periods, then count
each key once) → `load_usage` (the open periods the usage cache does not know) → the pure
alert decision → `record_alerts`. Each step is one statement, one round trip. The service-level
watch (`level_watcher.py`) reads `warned_levels` and `load_usage` and writes `record_alerts`.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

import asyncpg
import msgspec

from services.metering.alerts import AlertRow, UsageKey
from services.metering.counting import MeteredItem, first_copies, flag_late
from services.metering.level_alerts import WARNING_PREFIX, warned_level
from shared.domain.periods import period_bounds
from shared.infra.db import Connection
from shared.ledger.locks import LOCK_AND_READ_CLOSED
from shared.ledger.reads import UNCLASSIFIED, ClassCount, counts_for_ranges

#: One statement, one round trip: claim each key of the batch (its first copy,
#: `counting.first_copies`) if no earlier batch did, and add what the newly claimed items hold
#: to their day rows. The insert returns what the sums need: nothing is joined back.
#: Keys arrive sorted and are claimed in that order, and day rows are updated in key order, so
#: concurrent writers (two instances around a rebalance) lock in one order and cannot deadlock.
#: The facts are read as `text`: json_to_recordset hands a nested object's text over as written
#: (metering's own encoding), where a `json` column would parse it again and print it back.
#: Returns the claimed keys as two arrays (client ids, item ids).
_COUNT_BATCH = """
WITH claimed AS (
    INSERT INTO metering.items (client_id, item_id, completed_at, service_line, complexity,
                                units, rule_id, agreement_version, late, received_at, metered_at,
                                source, opened_at, handling_seconds, facts)
    SELECT client_id, item_id, completed_at, service_line, complexity, units, rule_id,
           agreement_version, late, received_at, clock_timestamp(), source, opened_at,
           handling_seconds, facts
      FROM json_to_recordset($1::json)
           AS b(client_id text, item_id text, completed_at timestamptz, service_line text,
                complexity text, units int, handling_seconds int, rule_id text,
                agreement_version int, late bool, received_at timestamptz, source text,
                opened_at timestamptz, facts text)
    ON CONFLICT (client_id, item_id) DO NOTHING
    RETURNING client_id, item_id, completed_at, service_line, complexity, units,
              handling_seconds, late
), added AS (
    INSERT INTO metering.usage_days AS s (client_id, day, service_line, complexity, items,
                                          units, handling_seconds, late_items)
    SELECT client_id, date_bin('24 hours', completed_at, timestamptz '2000-01-01 00:00Z'),
           service_line, complexity, count(*), sum(units), coalesce(sum(handling_seconds), 0),
           count(*) FILTER (WHERE late AND service_line <> $2)
      FROM claimed
     GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (client_id, day, service_line, complexity) DO UPDATE
       SET items = s.items + excluded.items,
           units = s.units + excluded.units,
           handling_seconds = s.handling_seconds + excluded.handling_seconds,
           late_items = s.late_items + excluded.late_items
)
SELECT coalesce(array_agg(client_id), '{}'), coalesce(array_agg(item_id), '{}') FROM claimed
"""


async def count(
    conn: Connection, batch: list[MeteredItem], *, timezone_of: Callable[[str], str]
) -> list[MeteredItem]:
    """In the caller's transaction: count every item not counted before; return those that
    were new, in batch order, flagged late when their period is closed for their client.

    The close lock comes first, shared for the batch's clients (with the closed periods, one
    round trip), so a close of one of them cannot commit between the read of the closed
    periods and the count; closes of other clients do not wait for it, nor it for them. The
    dedupe insert and the counter update are one statement: a key is never claimed without its
    counts, so a crash cannot under-count.
    """
    if not batch:
        return []
    clients = sorted({item.client_id for item in batch})
    closed = {(c, p) for c, p in await conn.fetch(LOCK_AND_READ_CLOSED, clients)}
    firsts = first_copies(flag_late(batch, timezone_of=timezone_of, closed=closed))
    in_key_order = [item for _, item in sorted(firsts.items(), key=itemgetter(0))]
    row = await conn.fetchrow(_COUNT_BATCH, _encode_rows(in_key_order).decode(), UNCLASSIFIED)
    assert row is not None  # an aggregate: always one row
    client_ids, item_ids = row
    if len(item_ids) == len(firsts):  # the usual case: every key was new
        return list(firsts.values())
    claimed = set(zip(client_ids, item_ids, strict=True))
    return [item for key, item in firsts.items() if key in claimed]


async def load_usage(conn: Connection, keys: list[UsageKey]) -> dict[UsageKey, list[ClassCount]]:
    """Each period's counts per class (in its client's timezone), in one round trip; in the
    counting transaction, so they hold what it counted."""
    if not keys:
        return {}
    found = await counts_for_ranges(
        conn, [(k.client_id, k.period.key, *period_bounds(k.period, k.timezone)) for k in keys]
    )
    return {k: found[(k.client_id, k.period.key)] for k in keys}


#: `_COUNT_BATCH`'s rows, one JSON document: an object per item, its keys the field names of
#: `MeteredItem` (the table's columns), the facts embedded as they were written. One string
#: parameter instead of an array per column: asyncpg checks every element of an array
#: parameter on its own, which cost metering twice what PostgreSQL spends reading the JSON.
_encode_rows = msgspec.json.Encoder().encode


async def record_alerts(conn: Connection, alerts: list[AlertRow]) -> None:
    """Remember (client, period, threshold) alerts; one that exists already is not raised twice."""
    if not alerts:
        return
    await conn.executemany(
        """INSERT INTO metering.alerts (client_id, period, threshold, body) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        alerts,
    )


async def warned_levels(
    conn: Connection, periods: list[tuple[str, str]]
) -> dict[tuple[str, str], set[str]]:
    """Of each (client, period key), the levels a service-level warning was recorded for (the
    alerts' key: one index range per period), in one round trip."""
    if not periods:
        return {}
    rows = await conn.fetch(
        """SELECT a.client_id, a.period, a.threshold
             FROM unnest($1::text[], $2::text[]) AS q(client_id, period)
             JOIN metering.alerts a USING (client_id, period)
            WHERE starts_with(a.threshold, $3)""",
        [client for client, _ in periods],
        [period for _, period in periods],
        WARNING_PREFIX,
    )
    found: dict[tuple[str, str], set[str]] = {key: set() for key in periods}
    for row in rows:
        level = warned_level(row["threshold"])
        if level is not None:
            found[(row["client_id"], row["period"])].add(level)
    return found


async def unpublished_alerts(pool: asyncpg.Pool) -> list[AlertRow]:
    rows = await pool.fetch(
        """SELECT client_id, period, threshold, body FROM metering.alerts
            WHERE NOT published ORDER BY created_at LIMIT 1000"""
    )
    return [AlertRow(r["client_id"], r["period"], r["threshold"], r["body"]) for r in rows]


async def mark_alerts_published(pool: asyncpg.Pool, keys: list[tuple[str, str, str]]) -> None:
    await pool.executemany(
        """UPDATE metering.alerts SET published = true
            WHERE client_id = $1 AND period = $2 AND threshold = $3""",
        keys,
    )
