"""A period's service levels as the ledger measures them (SPEC §11): for each level of an
agreement, how many of the period's items it measured and how many met it. Billing reads it at a
close, a re-rating and a note; metering for `GET /v1/service-levels` and its attainment alerts.

A level measures an item when the item is billable (classified), of the level's class, and has
`opened_at`. Elapsed turnaround is `completed_at − opened_at`. Business turnaround is read off a
`BusinessClock` laid out in Python (`shared.domain.business_time` decides what business time is)
and passed in as three arrays: `width_bucket` finds each instant's interval by binary search, and
the business time before an instant is the time before its interval plus what of the interval
has passed. Only two counts per level come back, however many items the period holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

import asyncpg

from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount
from shared.domain.business_time import BusinessClock
from shared.domain.usage import UNCLASSIFIED
from shared.infra.db import Executor

#: How far before a period its business clock reaches at first: an item opened earlier than that
#: is rare, and when the statement reports one the clock is laid out again from it.
_CLOCK_LEAD: Final = timedelta(days=45)
#: Any turnaround Tierline can see is shorter (2000..2099): a longer `within_hours` is this.
_FOREVER: Final = timedelta(days=366 * 100)
_HOUR_MICROS: Final = Decimal(3_600_000_000)

#: $5.. the levels (line, complexities joined by commas or null, `within_hours` as an interval,
#: whether on the business clock); $9.. the business clock (interval starts, ends, the business
#: time before each start). Interval arithmetic and comparisons are exact (whole microseconds).
#: Each level also reports the earliest `opened_at` it measured, so the caller can tell whether
#: the clock reached back far enough.
_COUNT_LEVELS = """
WITH levels AS (
    SELECT * FROM unnest($5::text[], $6::text[], $7::interval[], $8::bool[])
        WITH ORDINALITY AS l(service_line, complexities, within, business, n)
), clock AS (
    SELECT $9::timestamptz[] AS starts, $10::timestamptz[] AS ends, $11::interval[] AS before
), items AS (
    SELECT service_line, complexity, opened_at, completed_at
      FROM metering.items
     WHERE client_id = $1 AND completed_at >= $2 AND completed_at < $3
       AND opened_at IS NOT NULL AND service_line <> $4
), turned AS (
    SELECT l.n, l.within, i.opened_at,
           CASE WHEN NOT l.business THEN i.completed_at - i.opened_at
                ELSE coalesce(k.before[w.c] + least(i.completed_at - k.starts[w.c],
                                                    k.ends[w.c] - k.starts[w.c]), interval '0')
                   - coalesce(k.before[w.o] + least(i.opened_at - k.starts[w.o],
                                                    k.ends[w.o] - k.starts[w.o]), interval '0')
           END AS turnaround
      FROM levels l
      JOIN items i ON i.service_line = l.service_line
                  AND (l.complexities IS NULL
                       OR i.complexity = ANY (string_to_array(l.complexities, ',')))
      CROSS JOIN clock k
      -- The interval each instant falls in or follows (0, whose subscripts are null: before
      -- the first, so no business time yet).
      CROSS JOIN LATERAL (SELECT width_bucket(i.opened_at, k.starts) AS o,
                                 width_bucket(i.completed_at, k.starts) AS c) w
)
SELECT l.n, count(t.n) AS measured, count(t.n) FILTER (WHERE t.turnaround <= t.within) AS met,
       min(t.opened_at) AS earliest
  FROM levels l LEFT JOIN turned t USING (n)
 GROUP BY l.n
 ORDER BY l.n
"""


async def level_counts(
    conn: Executor, agreement: Agreement, start: datetime, end: datetime
) -> list[LevelCount] | None:
    """The counts of each of `agreement`'s service levels, in order, for the client's items with
    `start <= completed_at < end`; None when the agreement has no service levels (what
    `rating.rate` takes). One statement, or two when a business-clock item was opened before the
    clock first laid out reaches."""
    terms = agreement.service_levels
    if terms is None:
        return None
    business = terms.calendar is not None and any(lv.clock == "business" for lv in terms.levels)
    since = start - _CLOCK_LEAD
    rows = await _count(conn, agreement, start, end, since if business else None)
    earliest = min(
        (row["earliest"] for row, level in zip(rows, terms.levels, strict=True)
         if level.clock == "business" and row["earliest"] is not None),
        default=None,
    )  # fmt: skip
    if business and earliest is not None and earliest < since:
        rows = await _count(conn, agreement, start, end, earliest)
    return [LevelCount(int(row["measured"]), int(row["met"])) for row in rows]


async def _count(
    conn: Executor, agreement: Agreement, start: datetime, end: datetime, since: datetime | None
) -> list[asyncpg.Record]:
    terms = agreement.service_levels
    assert terms is not None
    clock = BusinessClock((), (), ())
    if since is not None and terms.calendar is not None:
        calendar = terms.calendar.in_zone(agreement.timezone)
        clock = BusinessClock.covering(calendar, since, end + timedelta(days=1))
    return await conn.fetch(
        _COUNT_LEVELS,
        agreement.client_id,
        start,
        end,
        UNCLASSIFIED,
        [level.service_line for level in terms.levels],
        [
            None if level.complexity is None else ",".join(level.complexity)
            for level in terms.levels
        ],
        [_within(level.within_hours) for level in terms.levels],
        [level.clock == "business" for level in terms.levels],
        list(clock.starts),
        list(clock.ends),
        [timedelta(microseconds=micros) for micros in clock.before],
    )


def _within(hours: Decimal) -> timedelta:
    """`within_hours` as an exact interval (at most 6 decimals: whole microseconds)."""
    micros = hours * _HOUR_MICROS
    if micros >= _FOREVER // timedelta(microseconds=1):
        return _FOREVER
    return timedelta(microseconds=int(micros))
