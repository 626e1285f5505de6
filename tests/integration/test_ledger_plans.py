"""Every read of the ledger touches the items only through an index range of one client's
completion times: the edges `metering.usage_between` reads from the items are less than a day
at each end of a range, and a plan that scanned a client's items by `client_id` alone (then
filtered them by time) would read all of them, for every client, on every close.

That happened: a close's list of clients (a margin of hours around the month) joined the edges
as a relation, and PostgreSQL put the items outside it; 150 clients of 10,000 items each took
22 s. The edges are now expressions of the function's arguments, so they are index bounds
whatever the plan around them. Then the same list, asking each client `EXISTS` of its day rows,
was planned as a scan of the whole table per client (PostgreSQL expects an early match): 0.5 s
for 142 clients. No reader's plan scans a table. Checked on the plans PostgreSQL makes for a
ledger of realistic shape (a private database: the shared one's statistics are every test's),
through the readers' own SQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from services.metering import store
from services.metering.counting import MeteredItem
from shared.domain.periods import parse_period, period_bounds
from shared.infra.db import Executor, apply_schema, create_pool
from shared.ledger import reads
from tests.databases import private_database

CLIENTS = 20
ITEMS_PER_CLIENT = 1_500
SEPTEMBER = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def ledger(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Two months of items for CLIENTS clients, counted by metering's own statement."""
    async with private_database(database_url, "plans") as url:
        pool = await create_pool(url, size=2)
        try:
            await apply_schema(pool)
            minutes = 61 * 24 * 60 // ITEMS_PER_CLIENT
            items = [
                MeteredItem(
                    f"c{c:02d}", f"i{n}", SEPTEMBER + timedelta(minutes=minutes * n),
                    "hr", "basic", 1, 60, "r", 1,
                )
                for n in range(ITEMS_PER_CLIENT)
                for c in range(CLIENTS)
            ]  # fmt: skip
            for first in range(0, len(items), 2_000):
                async with pool.acquire() as conn, conn.transaction():
                    await store.count(conn, items[first : first + 2_000], timezone_of=utc)
            await pool.execute("ANALYZE")
            yield pool
        finally:
            await pool.close()


def utc(_: str) -> str:
    return "UTC"


class Explaining:
    """An executor that plans each statement instead of running it, keeping the plans."""

    def __init__(self, conn: Executor) -> None:
        self.conn = conn
        self.plans: list[dict[str, Any]] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        explained = await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
        self.plans.append(json.loads(explained)[0]["Plan"])
        return []


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def items_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in nodes(plan) if n.get("Relation Name") == "items"]


#: Ranges as the readers get them: a month without usage, a UTC month (no edges), a zone's month
#: (edges at both ends), and a close's list of clients, a margin of 15 hours around the month
#: (edges into the months around it: the plan of the incident above).
NOVEMBER = parse_period("2026-11")
RANGES = [
    period_bounds(parse_period("2027-03"), "UTC"),  # no client has usage: every probe finds none
    period_bounds(NOVEMBER, "UTC"),
    period_bounds(NOVEMBER, "Asia/Kathmandu"),
    (
        period_bounds(NOVEMBER, "UTC")[0] - timedelta(hours=15),
        period_bounds(NOVEMBER, "UTC")[1] + timedelta(hours=15),
    ),
]


async def test_every_reader_reads_the_items_only_by_a_range_of_completion_times(
    ledger: asyncpg.Pool,
) -> None:
    async with ledger.acquire() as conn:
        explaining = Explaining(conn)
        db = cast(Executor, explaining)  # what the readers call: fetch
        for start, end in RANGES:
            await reads.counts_between(db, "c03", start, end)
            await reads.counts_for_ranges(
                db, [(f"c{c:02d}", "p", start, end) for c in range(CLIENTS)]
            )
            await reads.clients_with_usage_between(db, start, end)
            await reads.late_period_counts(
                db, "c03", [("2026-10", start - timedelta(days=30), start, 0)]
            )
    assert len(explaining.plans) == 4 * len(RANGES)
    for plan in explaining.plans:  # a client's rows by its key, never by reading the table
        assert not [n for n in nodes(plan) if n["Node Type"] == "Seq Scan"], plan
    scans = [scan for plan in explaining.plans for scan in items_scans(plan)]
    assert scans  # the edges are read from the items
    for scan in scans:  # an index scan's condition, or a bitmap heap scan's index's
        condition = " ".join(n.get("Index Cond", "") for n in nodes(scan))
        assert "client_id" in condition and "completed_at >=" in condition, scan
        assert "completed_at <" in condition, scan
