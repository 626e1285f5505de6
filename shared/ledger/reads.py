"""The usage ledger as metering, billing and the console read it: counts per class over a time
range, which periods are closed, the invoiced periods with late items to settle, and the
reclassifications owed a note. Metering
writes it (services/metering/store.py); billing closes periods against it under the close lock
(shared/ledger/locks.py), so no item is counted between a close's read and its commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# The plain values live in a pure module; re-exported for the callers that import them from here.
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED, ClassCount, billable_usage
from shared.infra.db import Executor

__all__ = [
    "NOTES_CHANNEL",
    "NO_COMPLEXITY",
    "UNCLASSIFIED",
    "ClassCount",
    "ClosedPeriod",
    "DueNote",
    "billable_usage",
    "class_count",
    "clients_owed_notes",
    "clients_with_usage_between",
    "closed_periods",
    "counts_between",
    "counts_for_ranges",
    "late_period_counts",
    "note_for",
    "notes_due",
]


def class_count(row: asyncpg.Record) -> ClassCount:
    """A row of summed counts (the columns of `counts_between`)."""
    return ClassCount(
        row["service_line"],
        row["complexity"],
        int(row["items"]),
        int(row["units"]),
        int(row["handling_seconds"]),
        int(row["late_items"]),
    )


async def counts_between(
    conn: Executor, client_id: str, start: datetime, end: datetime
) -> list[ClassCount]:
    """Every class's counts for items with start <= completed_at < end (`usage_between`)."""
    rows = await conn.fetch(
        """
        SELECT service_line, complexity, sum(items) AS items, sum(units) AS units,
               sum(handling_seconds) AS handling_seconds, sum(late_items) AS late_items
          FROM metering.usage_between($1, $2, $3, $4)
         GROUP BY service_line, complexity
        HAVING sum(items) <> 0  -- a class a reclassification emptied is no class of the period
        """,
        client_id,
        start,
        end,
        UNCLASSIFIED,
    )
    return [class_count(r) for r in rows]


async def clients_with_usage_between(conn: Executor, start: datetime, end: datetime) -> list[str]:
    """The clients with an item counted in [start, end), in order. A skip scan of the day rows'
    key (client, day, …), a probe per client for the next; then for each client, the ranges
    `usage_between` reads, each asked for its first row by an index descent (`min`), which
    stops at the range's end whether or not it finds one. (As `EXISTS`, PostgreSQL may choose
    to look for the first row by scanning the table, expecting one soon: for a client with no
    usage in the range, every row of it, for every such client.) A plain DISTINCT would read
    every row of every month."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE clients AS (
            SELECT min(client_id) AS client_id FROM metering.usage_days
            UNION ALL
            SELECT (SELECT min(d.client_id) FROM metering.usage_days d
                     WHERE d.client_id > c.client_id)
              FROM clients c
             WHERE c.client_id IS NOT NULL
        )
        SELECT client_id FROM clients c
         WHERE client_id IS NOT NULL
           AND ((SELECT min(d.day) FROM metering.usage_days d
                  WHERE d.client_id = c.client_id AND d.items <> 0
                    AND d.day >= metering.first_midnight($1)
                    AND d.day < metering.last_midnight($2)) IS NOT NULL
             OR (SELECT min(i.completed_at) FROM metering.items i
                  WHERE i.client_id = c.client_id AND i.completed_at >= $1
                    AND i.completed_at < metering.head_end($1, $2)) IS NOT NULL
             OR (SELECT min(i.completed_at) FROM metering.items i
                  WHERE i.client_id = c.client_id AND i.completed_at >= metering.tail_start($1, $2)
                    AND i.completed_at < $2) IS NOT NULL)
         ORDER BY client_id
        """,
        start,
        end,
    )
    return [r["client_id"] for r in rows]


@dataclass(frozen=True)
class ClosedPeriod:
    client_id: str
    period: str
    invoice_id: str | None
    tier_name: str | None
    tier_reason: str | None


async def closed_periods(
    conn: Executor, client_ids: list[str]
) -> dict[tuple[str, str], ClosedPeriod]:
    rows = await conn.fetch(
        """SELECT client_id, period, invoice_id, tier_name, tier_reason
             FROM billing.closed_periods WHERE client_id = ANY($1::text[])""",
        client_ids,
    )
    return {
        (r["client_id"], r["period"]): ClosedPeriod(
            r["client_id"], r["period"], r["invoice_id"], r["tier_name"], r["tier_reason"]
        )
        for r in rows
    }


async def counts_for_ranges(
    conn: Executor, ranges: list[tuple[str, str, datetime, datetime]]
) -> dict[tuple[str, str], list[ClassCount]]:
    """`counts_between` for many (client_id, label, start, end) at once, in one round trip."""
    rows = await conn.fetch(
        """
        SELECT q.client_id, q.label, u.service_line, u.complexity, sum(u.items) AS items,
               sum(u.units) AS units, sum(u.handling_seconds) AS handling_seconds,
               sum(u.late_items) AS late_items
          FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
               AS q(client_id, label, start_at, end_at)
         CROSS JOIN LATERAL metering.usage_between(q.client_id, q.start_at, q.end_at, $5) u
         GROUP BY q.client_id, q.label, u.service_line, u.complexity
        HAVING sum(u.items) <> 0
        """,
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
        [r[3] for r in ranges],
        UNCLASSIFIED,
    )
    found: dict[tuple[str, str], list[ClassCount]] = {(r[0], r[1]): [] for r in ranges}
    for r in rows:
        found[(r["client_id"], r["label"])].append(class_count(r))
    return found


async def late_period_counts(
    conn: Executor, client_id: str, ranges: list[tuple[str, datetime, datetime, int]]
) -> dict[str, list[ClassCount]]:
    """Of the client's (period, start, end, late items settled), the counts per class of those
    periods whose late items now exceed what was settled, in one round trip. Only the rows
    holding late items are read to find them (`usage_between`'s `late_only`, through the indexes
    `usage_days_late` and `items_late`), then only their periods' counts."""
    if not ranges:
        return {}
    rows = await conn.fetch(
        """
        WITH q AS (
            SELECT * FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])
                AS q(period, start_at, end_at, settled)
        ), changed AS (
            SELECT q.period, q.start_at, q.end_at
              FROM q CROSS JOIN LATERAL metering.usage_between($1, q.start_at, q.end_at, $6, true) u
             GROUP BY q.period, q.start_at, q.end_at, q.settled
            HAVING sum(u.late_items) > q.settled
        )
        SELECT c.period, u.service_line, u.complexity, sum(u.items) AS items,
               sum(u.units) AS units, sum(u.handling_seconds) AS handling_seconds,
               sum(u.late_items) AS late_items
          FROM changed c CROSS JOIN LATERAL metering.usage_between($1, c.start_at, c.end_at, $6) u
         GROUP BY c.period, u.service_line, u.complexity
        HAVING sum(u.items) <> 0
        """,
        client_id,
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
        [r[3] for r in ranges],
        UNCLASSIFIED,
    )
    found: dict[str, list[ClassCount]] = {}
    for r in rows:
        found.setdefault(r["period"], []).append(class_count(r))
    return found


# --- reclassifications and their notes (SPEC §10): metering records, billing notes ---------------


#: Metering notifies this channel (payload: the client id) when a reclassification owes a note.
NOTES_CHANNEL = "tierline_notes"


@dataclass(frozen=True)
class DueNote:
    """A reclassification that moved items in a closed, invoiced period and has no note yet."""

    client_id: str
    reclassification: str
    period: str
    reason: str
    late_delta: int


async def clients_owed_notes(conn: Executor) -> list[str]:
    """The clients with a reclassification still owed its note (index
    `reclassifications_note_due`)."""
    rows = await conn.fetch("""SELECT DISTINCT client_id FROM billing.notes_owed ORDER BY 1""")
    return [r["client_id"] for r in rows]


async def notes_due(conn: Executor, client_id: str) -> list[DueNote]:
    """The client's reclassifications owed a note, in the order they were made."""
    rows = await conn.fetch(
        """SELECT id, period, body->>'reason' AS reason, late_delta
             FROM billing.notes_owed WHERE client_id = $1 ORDER BY seq""",
        client_id,
    )
    return [
        DueNote(client_id, r["id"], r["period"], r["reason"], int(r["late_delta"])) for r in rows
    ]


async def note_for(conn: Executor, client_id: str, reclassification: str) -> str | None:
    """The id of the note billing issued for a reclassification, if it has."""
    value: str | None = await conn.fetchval(
        """SELECT note_id FROM billing.notes WHERE client_id = $1 AND reclassification = $2""",
        client_id,
        reclassification,
    )
    return value
