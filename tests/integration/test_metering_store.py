"""Metering's counting transaction on a real PostgreSQL: once per key, through replays and races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.metering import store
from services.metering.counting import MeteredItem
from shared.infra.db import apply_schema, create_pool
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.reads import clients_with_usage_between, counts_between
from tests.databases import private_database

START = datetime(2026, 10, 1, tzinfo=UTC)


def utc(_: str) -> str:
    return "UTC"


async def meter_batch(
    pool: asyncpg.Pool, batch: list[MeteredItem], *, timezone_of: Callable[[str], str]
) -> list[MeteredItem]:
    """The store's counting step in a transaction of its own (the handler adds the alerts)."""
    async with pool.acquire() as conn, conn.transaction():
        return await store.count(conn, batch, timezone_of=timezone_of)


def make(
    client: str, n: int, *, minutes: int = 0, line: str = "accounting", units: int = 1
) -> MeteredItem:
    return MeteredItem(
        client_id=client,
        item_id=f"i-{n}",
        completed_at=START + timedelta(minutes=minutes + n),
        service_line=line,
        complexity="basic",
        units=units,
        handling_seconds=60,
        rule_id="r",
        agreement_version=1,
    )


async def totals(pool: asyncpg.Pool, client: str) -> tuple[int, int, int]:
    counts = await counts_between(pool, client, START, START + timedelta(days=40))
    return (
        sum(c.items for c in counts),
        sum(c.units for c in counts),
        sum(c.late_items for c in counts),
    )


async def test_a_replayed_batch_changes_no_count(pool: asyncpg.Pool) -> None:
    client = f"replay-{uuid.uuid4().hex[:6]}"
    batch = [make(client, n, units=2) for n in range(500)]
    assert len(await meter_batch(pool, batch, timezone_of=utc)) == 500
    assert await totals(pool, client) == (500, 1000, 0)
    assert await meter_batch(pool, batch, timezone_of=utc) == []
    assert await totals(pool, client) == (500, 1000, 0)


async def test_the_first_copy_counts_even_inside_one_batch(pool: asyncpg.Pool) -> None:
    client = f"first-{uuid.uuid4().hex[:6]}"
    original = make(client, 1, units=3)
    resent = make(client, 1, minutes=60 * 24 * 20, units=7)  # other fields differ: still a copy
    counted = await meter_batch(pool, [original, resent], timezone_of=utc)
    assert counted == [original]
    assert await totals(pool, client) == (1, 3, 0)


async def test_items_of_a_closed_period_are_flagged_late(pool: asyncpg.Pool) -> None:
    client = f"late-{uuid.uuid4().hex[:6]}"
    await meter_batch(pool, [make(client, 0)], timezone_of=utc)
    await pool.execute(
        "INSERT INTO billing.closed_periods (client_id, period, items) VALUES ($1, '2026-10', 1)",
        client,
    )
    await meter_batch(pool, [make(client, 1), make(client, 2)], timezone_of=utc)
    assert await totals(pool, client) == (3, 3, 2)


async def test_concurrent_writers_of_overlapping_batches_count_each_key_once(
    pool: asyncpg.Pool,
) -> None:
    client = f"race-{uuid.uuid4().hex[:6]}"
    items = [make(client, n) for n in range(2000)]
    # Four writers, each with an overlapping half of the items, in different orders.
    batches = [items[:1000], items[500:1500], items[1000:], list(reversed(items[250:1750]))]
    counted = await asyncio.gather(*(meter_batch(pool, b, timezone_of=utc) for b in batches))
    assert sum(len(c) for c in counted) == 2000
    assert await totals(pool, client) == (2000, 2000, 0)


async def test_a_month_is_read_in_the_clients_timezone(pool: asyncpg.Pool) -> None:
    client = f"tz-{uuid.uuid4().hex[:6]}"
    # 2026-10-01T02:00Z is still September in New York (UTC-4).
    early = MeteredItem(
        client, "x", datetime(2026, 10, 1, 2, tzinfo=UTC), "hr", "basic", 1, 0, None, None
    )
    await meter_batch(pool, [early], timezone_of=utc)
    from shared.domain.periods import parse_period, period_bounds

    september = period_bounds(parse_period("2026-09"), "America/New_York")
    october = period_bounds(parse_period("2026-10"), "America/New_York")
    assert sum(c.items for c in await counts_between(pool, client, *september)) == 1
    assert sum(c.items for c in await counts_between(pool, client, *october)) == 0


async def test_counts_are_summed_per_utc_day_and_class(pool: asyncpg.Pool) -> None:
    client = f"days-{uuid.uuid4().hex[:6]}"
    at = datetime(2026, 10, 5, 23, 50, tzinfo=UTC)

    def one(n: int, minutes: int, line: str = "hr", *, units: int = 2) -> MeteredItem:
        return MeteredItem(
            client, f"s{n}", at + timedelta(minutes=minutes), line, "basic", units, 30 * n, None, 1
        )

    batch = [one(1, 0), one(2, 7), one(3, 10), one(4, 1, "accounting", units=5)]
    assert len(await meter_batch(pool, batch, timezone_of=utc)) == 4
    await meter_batch(pool, [one(5, 9)], timezone_of=utc)  # onto an existing row
    rows = await pool.fetch(
        """SELECT day, service_line, items, units, handling_seconds FROM metering.usage_days
            WHERE client_id = $1 ORDER BY day, service_line""",
        client,
    )
    assert [tuple(r) for r in rows] == [
        (datetime(2026, 10, 5, tzinfo=UTC), "accounting", 1, 5, 120),
        (datetime(2026, 10, 5, tzinfo=UTC), "hr", 3, 6, 30 + 60 + 150),  # 23:50, 23:57, 23:59
        (datetime(2026, 10, 6, tzinfo=UTC), "hr", 1, 2, 90),  # 00:00 the next day
    ]


#: Zones whose midnight cuts a UTC day: behind UTC, ahead by a quarter-hour offset, and one that
#: changes its offset (DST) inside the month.
_ZONES = ("America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham")


async def test_a_period_in_any_zone_counts_exactly_its_items_edges_and_whole_days(
    pool: asyncpg.Pool,
) -> None:
    """Items every 37 minutes over three months, in two classes, some late: each zone's
    months, a range inside one day and a range across two, read through the day rows and the
    edges, hold exactly the items a count of the items themselves finds, whatever the reading
    session's own timezone (one whose offset changes inside the months)."""
    client = f"edges-{uuid.uuid4().hex[:6]}"
    first = datetime(2026, 9, 1, tzinfo=UTC) - timedelta(days=2)
    items = [
        MeteredItem(
            client, f"e{n}", first + timedelta(minutes=37 * n),
            "hr" if n % 3 else "accounting", "basic", 1 + n % 4,
            None if n % 5 == 0 else n % 900, "r", 1, late=n % 7 == 0,
        )
        for n in range(96 * 24 * 60 // 37)
    ]  # fmt: skip
    for n in range(0, len(items), 500):
        async with pool.acquire() as conn, conn.transaction():
            await store.count(conn, items[n : n + 500], timezone_of=utc)
    # `count` flags late only for closed periods: mark some late as a close would have found them.
    await pool.execute(
        """UPDATE metering.items SET late = true
            WHERE client_id = $1 AND substr(item_id, 2)::int % 7 = 0""",
        client,
    )
    await pool.execute(
        """UPDATE metering.usage_days d SET late_items = n
             FROM (SELECT date_bin('24 hours', completed_at, timestamptz '2000-01-01 00:00Z')
                              AS day, service_line, complexity, count(*) AS n
                     FROM metering.items WHERE client_id = $1 AND late GROUP BY 1, 2, 3) l
            WHERE d.client_id = $1 AND (d.day, d.service_line, d.complexity)
                  = (l.day, l.service_line, l.complexity)""",
        client,
    )
    from shared.domain.periods import parse_period, period_bounds

    ranges = [
        period_bounds(parse_period(period), zone)
        for zone in _ZONES
        for period in ("2026-09", "2026-10", "2026-11")
    ]
    ranges.append((datetime(2026, 10, 7, 5, 45, tzinfo=UTC), datetime(2026, 10, 7, 9, tzinfo=UTC)))
    ranges.append((datetime(2026, 10, 7, 5, 45, tzinfo=UTC), datetime(2026, 10, 8, 9, tzinfo=UTC)))
    for start, end in ranges:
        expected = {
            (item.service_line, item.complexity): [0, 0, 0, 0]
            for item in items
            if start <= item.completed_at < end
        }
        for item in items:
            if start <= item.completed_at < end:
                row = expected[(item.service_line, item.complexity)]
                row[0] += 1
                row[1] += item.units
                row[2] += item.handling_seconds or 0
                row[3] += int(int(item.item_id[1:]) % 7 == 0)
        async with pool.acquire() as conn:
            for session_zone in ("UTC", "Australia/Lord_Howe"):  # the session's zone: no matter
                await conn.execute(f"SET TimeZone = '{session_zone}'")
                found = {
                    (c.service_line, c.complexity): [
                        c.items, c.units, c.handling_seconds, c.late_items
                    ]
                    for c in await counts_between(conn, client, start, end)
                }  # fmt: skip
                assert found == expected, (start, end, session_zone)
            await conn.execute("RESET TimeZone")
    assert any(start.astimezone(UTC).minute == 15 for start, _ in ranges)  # a quarter-hour edge


async def test_a_metered_batch_costs_one_transaction_of_few_statements(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The statements one batch costs: the lock and closed periods, the count, the period usage
    only when the usage cache misses it, the alerts only when a threshold is crossed."""
    from typing import cast

    from prometheus_client import CollectorRegistry

    from services.metering.handlers import Admitted, Meter, MeteringMetrics
    from shared.infra.kafka import make_broker
    from tests.unit.test_rating import ACME

    one_connection = await create_pool(database_url, size=1)
    statements: list[str] = []
    async with one_connection.acquire() as conn:  # the pool's only connection, for every batch
        conn.add_query_logger(lambda record: statements.append(record.query))
    client, warm_up = f"cost-{uuid.uuid4().hex[:6]}", f"warm-{uuid.uuid4().hex[:6]}"
    agreements = {c: ACME.model_copy(update={"client_id": c}) for c in (client, warm_up)}
    meter = Meter(
        make_broker(
            KafkaConnection.plaintext("127.0.0.1:9"), client_id="unused"
        ),  # never started: counting needs no broker
        one_connection,
        agreements,
        MeteringMetrics(CollectorRegistry()),
    )
    marks = {
        "BEGIN": "begin",
        "lock_and_read_closed": "lock+closed",
        "WITH claimed AS": "count",
        "unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])": "usage",
        "INSERT INTO metering.alerts": "alerts",
        "COMMIT": "commit",
        "RESET ALL": "release",  # asyncpg's reset on a release, which our pools skip
    }
    sent = 0

    async def cost(n: int, of: str = client) -> list[str]:
        nonlocal sent
        items = [
            MeteredItem(
                of,
                f"c{sent + k}",
                START + timedelta(days=9),
                "customer_support",
                "basic",
                1,
                60,
                None,
                1,
            )
            for k in range(n)
        ]
        sent += n
        statements.clear()
        assert len(await meter.count([cast(Admitted, (None, item)) for item in items])) == n
        await asyncio.sleep(0)  # query loggers are called soon after each statement
        return [next((n for m, n in marks.items() if m in q), q) for q in statements]

    try:
        # asyncpg introspects types the first time a connection meets them: not per batch.
        assert "alerts" in await cost(810, warm_up)
        assert await cost(10) == ["begin", "lock+closed", "count", "usage", "commit"]
        assert await cost(10) == [
            "begin",
            "lock+closed",
            "count",
            "commit",
        ]  # usage cached
        assert await cost(800) == [
            "begin",
            "lock+closed",
            "count",
            "alerts",
            "commit",
        ]  # 80 %
    finally:
        await one_connection.close()


async def test_a_service_starting_applies_the_schema_while_a_counting_transaction_is_open(
    pool: asyncpg.Pool,
) -> None:
    """Every service applies the schema at start while metering writes. Once applied, the schema
    takes no lock a counting transaction holds: with a batch counted but not yet committed (its
    locks held: the ledger's close lock, the items and the usage days), a second application
    finishes, and the batch then commits. (Before, `ADD COLUMN IF NOT EXISTS` and `CREATE INDEX IF
    NOT EXISTS` locked the tables even when there was nothing to do, and deadlocked a restarting
    billing against metering in the chaos test.)"""
    client = f"schema-{uuid.uuid4().hex[:6]}"
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            assert len(await store.count(conn, [make(client, 1)], timezone_of=utc)) == 1
            held = await conn.fetchval(
                """SELECT count(*) FROM pg_locks
                    WHERE pid = pg_backend_pid() AND granted
                      AND relation IN ('metering.items'::regclass, 'metering.usage_days'::regclass)
                      AND mode = 'RowExclusiveLock'"""
            )
            assert held == 2  # the batch is in flight: both tables written, not committed
            await asyncio.wait_for(apply_schema(pool), timeout=60)
        finally:
            await transaction.commit()
    assert await totals(pool, client) == (1, 1, 0)


async def test_clients_with_usage_are_those_with_an_item_in_the_range_in_order(
    pool: asyncpg.Pool,
) -> None:
    tag = uuid.uuid4().hex[:6]
    end = START + timedelta(days=31)
    inside, before, at_end, both = (f"{tag}-{name}" for name in ("d", "a", "c", "b"))
    await meter_batch(pool, [make(inside, 0)], timezone_of=utc)  # the range's first slot
    await meter_batch(pool, [make(before, 0, minutes=-15)], timezone_of=utc)
    await meter_batch(pool, [make(at_end, 0, minutes=31 * 24 * 60)], timezone_of=utc)
    await meter_batch(
        pool, [make(both, 0, minutes=-60 * 24), make(both, 1, minutes=31 * 24 * 60 - 16)],
        timezone_of=utc,
    )  # fmt: skip
    found = await clients_with_usage_between(pool, START, end)
    assert [client for client in found if client.startswith(tag)] == [both, inside]
    assert found == sorted(found)


#: metering.usage_slots as a ledger from before usage_days kept it: a row per 15-minute slot.
_SLOTS = """
CREATE SCHEMA metering;
CREATE TABLE metering.usage_slots (
    client_id text NOT NULL, slot timestamptz NOT NULL, service_line text NOT NULL,
    complexity text NOT NULL, items bigint NOT NULL, units bigint NOT NULL,
    handling_seconds bigint NOT NULL, late_items bigint NOT NULL,
    PRIMARY KEY (client_id, slot, service_line, complexity));
INSERT INTO metering.usage_slots VALUES
    ('acme', '2026-10-05 00:00Z', 'hr', 'basic', 2, 3, 60, 0),
    ('acme', '2026-10-05 23:45Z', 'hr', 'basic', 1, 1, 0, 1),
    ('acme', '2026-10-05 12:15Z', 'accounting', 'basic', 4, 4, 10, 0),
    ('acme', '2026-10-06 00:00Z', 'hr', 'basic', 5, 5, 5, 0),
    ('zeta', '2026-10-05 07:30Z', 'unclassified', 'none', 1, 1, 0, 0);
"""


async def test_a_ledger_of_15_minute_slots_moves_to_day_rows_once_at_start(
    database_url: str,
) -> None:
    async with private_database(database_url, "slots") as url:
        old = await create_pool(url, size=2)
        try:
            await old.execute(_SLOTS)
            await apply_schema(old)
            await apply_schema(old)  # a second start changes nothing
            rows = await old.fetch(
                """SELECT client_id, day, service_line, items, units, handling_seconds,
                          late_items
                     FROM metering.usage_days ORDER BY 1, 2, 3"""
            )
            assert [tuple(r) for r in rows] == [
                ("acme", datetime(2026, 10, 5, tzinfo=UTC), "accounting", 4, 4, 10, 0),
                ("acme", datetime(2026, 10, 5, tzinfo=UTC), "hr", 3, 4, 60, 1),
                ("acme", datetime(2026, 10, 6, tzinfo=UTC), "hr", 5, 5, 5, 0),
                ("zeta", datetime(2026, 10, 5, tzinfo=UTC), "unclassified", 1, 1, 0, 0),
            ]
            kind = await old.fetchval(
                "SELECT relkind FROM pg_class WHERE oid = 'metering.usage_slots'::regclass"
            )
            assert kind == b"v"  # the table went; its name reads the day rows
            by_month = await old.fetch(
                """SELECT client_id, to_char(slot AT TIME ZONE 'UTC', 'YYYY-MM'), sum(items)
                     FROM metering.usage_slots GROUP BY 1, 2 ORDER BY 1"""
            )
            assert [tuple(r) for r in by_month] == [("acme", "2026-10", 12), ("zeta", "2026-10", 1)]
            with pytest.raises(asyncpg.exceptions.ObjectNotInPrerequisiteStateError):
                await old.execute(  # a writer from before cannot write 15-minute rows into it
                    """INSERT INTO metering.usage_slots VALUES
                           ('acme', '2026-10-05 00:15Z', 'hr', 'basic', 1, 1, 0, 0)"""
                )
        finally:
            await old.close()
