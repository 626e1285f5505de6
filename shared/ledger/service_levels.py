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

from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount
from shared.domain.business_time import BusinessClock
from shared.domain.usage import UNCLASSIFIED
from shared.infra.db import Executor

_MICROS_PER_HOUR: Final = Decimal(3_600_000_000)

_EARLIEST_OPENED = """
SELECT min(opened_at) FROM metering.items
 WHERE client_id = $1 AND completed_at >= $2 AND completed_at < $3
   AND opened_at IS NOT NULL AND service_line <> $4
"""

#: $5.. the levels (line, complexities joined by commas or null, within in microseconds, whether
#: on the business clock); $9.. the business clock (interval starts, ends, business microseconds
#: before each start).
_COUNT_LEVELS = """
WITH levels AS (
    SELECT * FROM unnest($5::text[], $6::text[], $7::numeric[], $8::bool[])
        WITH ORDINALITY AS l(service_line, complexities, within_us, business, n)
), clock AS (
    SELECT $9::timestamptz[] AS starts, $10::timestamptz[] AS ends, $11::bigint[] AS before
), items AS (
    SELECT service_line, complexity, opened_at, completed_at
      FROM metering.items
     WHERE client_id = $1 AND completed_at >= $2 AND completed_at < $3
       AND opened_at IS NOT NULL AND service_line <> $4
), turned AS (
    SELECT l.n, l.within_us,
           CASE WHEN NOT l.business
                THEN extract(epoch FROM i.completed_at - i.opened_at) * 1000000
                ELSE coalesce(k.before[w.c] + extract(epoch FROM least(
                         i.completed_at - k.starts[w.c], k.ends[w.c] - k.starts[w.c])) * 1000000, 0)
                   - coalesce(k.before[w.o] + extract(epoch FROM least(
                         i.opened_at - k.starts[w.o], k.ends[w.o] - k.starts[w.o])) * 1000000, 0)
           END AS turnaround_us
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
SELECT l.n, count(t.n) AS measured, count(t.n) FILTER (WHERE t.turnaround_us <= t.within_us) AS met
  FROM levels l LEFT JOIN turned t USING (n)
 GROUP BY l.n
 ORDER BY l.n
"""


async def level_counts(
    conn: Executor, agreement: Agreement, start: datetime, end: datetime
) -> list[LevelCount] | None:
    """The counts of each of `agreement`'s service levels, in order, for the client's items with
    `start <= completed_at < end`; None when the agreement has no service levels (what
    `rating.rate` takes)."""
    terms = agreement.service_levels
    if terms is None:
        return None
    client = agreement.client_id
    starts: list[datetime] = []
    ends: list[datetime] = []
    before: list[int] = []
    if terms.calendar is not None and any(level.clock == "business" for level in terms.levels):
        earliest = await conn.fetchval(_EARLIEST_OPENED, client, start, end, UNCLASSIFIED)
        if earliest is not None:
            calendar = terms.calendar.in_zone(agreement.timezone)
            clock = BusinessClock.covering(calendar, min(earliest, start), end + timedelta(days=1))
            starts, ends, before = list(clock.starts), list(clock.ends), list(clock.before)
    rows = await conn.fetch(
        _COUNT_LEVELS,
        client,
        start,
        end,
        UNCLASSIFIED,
        [level.service_line for level in terms.levels],
        [
            None if level.complexity is None else ",".join(level.complexity)
            for level in terms.levels
        ],
        [level.within_hours * _MICROS_PER_HOUR for level in terms.levels],
        [level.clock == "business" for level in terms.levels],
        starts,
        ends,
        before,
    )
    return [LevelCount(int(row["measured"]), int(row["met"])) for row in rows]
