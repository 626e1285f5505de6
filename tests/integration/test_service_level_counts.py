"""The ledger's service-level counts (shared/ledger/service_levels.py) on real PostgreSQL: the
database reads business time off the clock `shared.domain.business_time` lays out, so each count
must equal what the pure module says item by item — across nights, weekends, a holiday and New
York's DST change — and only billable items of a level's class with `opened_at` are measured."""

from __future__ import annotations

import random
from datetime import UTC, timedelta
from decimal import Decimal

import asyncpg

from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.attainment import LevelCount
from shared.domain.business_time import BusinessClock
from shared.domain.periods import Period, period_bounds
from shared.ledger.service_levels import level_counts
from tests.items_ledger import LedgerItem, seed_items

ZONE = "America/New_York"
PERIOD = Period(2026, 11)  # DST ends on Sunday 1 November 2026 at 02:00 local


def _agreement(client: str) -> Agreement:
    return parse_agreement(
        {
            "client_id": client,
            "currency": "USD",
            "timezone": ZONE,
            "pricing": {
                "weights": {"basic": 1, "standard": 2, "complex": 5},
                "tiers": [{"name": "Only", "fee": "1000.00"}],
            },
            "service_levels": {
                "at_risk_percent": "10",
                "calendar": {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "hours": ["09:00", "18:00"],
                    "holidays": ["2026-11-26"],
                },
                "levels": [
                    {
                        "id": "ap",
                        "service_line": "accounting",
                        "complexity": ["basic", "standard"],
                        "within_hours": 9,
                        "clock": "business",
                        "target_percent": "95",
                        "pool_percent": "50",
                    },
                    {
                        "id": "care",
                        "service_line": "customer_support",
                        "within_hours": "4.5",
                        "target_percent": "90",
                        "pool_percent": "30",
                    },
                    {
                        "id": "ap-night",
                        "service_line": "accounting",
                        "within_hours": 30,
                        "clock": "business",
                        "target_percent": "50",
                        "pool_percent": "20",
                    },
                    {
                        "id": "hr",
                        "service_line": "hr",
                        "within_hours": 1,
                        "target_percent": "50",
                        "pool_percent": "0",
                    },
                    # Decided by the items opened 100 days before: ~640 business hours each.
                    {
                        "id": "ap-quarter",
                        "service_line": "accounting",
                        "within_hours": 400,
                        "clock": "business",
                        "target_percent": "50",
                        "pool_percent": "0",
                    },
                ],
            },
        }
    )


async def test_counts_equal_the_pure_clock_item_by_item(pool: asyncpg.Pool) -> None:
    client = f"slc-{random.randrange(10**9)}"
    agreement = _agreement(client)
    start, end = period_bounds(PERIOD, ZONE)
    rng = random.Random(7)
    items = []
    span = (end - start).total_seconds()
    for n in range(3000):
        completed = start.astimezone(UTC) + timedelta(seconds=rng.uniform(0, span - 1))
        # Opened up to ten days earlier: many before the period, some on the DST night.
        opened = completed - timedelta(
            seconds=rng.choice((0, 60, 3600 * 4.5, rng.uniform(0, 864000)))
        )
        line, complexity = rng.choice(
            [
                ("accounting", "basic"),
                ("accounting", "complex"),
                ("customer_support", "basic"),
                ("unclassified", "none"),
            ]
        )
        items.append(
            LedgerItem(
                client,
                f"i{n}",
                completed,
                line,
                complexity,
                opened_at=None if n % 10 == 0 else opened,
            )
        )
    # Opened long before the period (beyond the clock's first reach): still exact.
    for n in range(5):
        completed = start.astimezone(UTC) + timedelta(days=3, hours=n)
        items.append(
            LedgerItem(client, f"old{n}", completed, "accounting", "basic",
                       opened_at=completed - timedelta(days=100 + n, hours=n))
        )  # fmt: skip
    # Just outside the period: never measured.
    items.append(
        LedgerItem(
            client,
            "after",
            end.astimezone(UTC),
            "accounting",
            "basic",
            opened_at=end - timedelta(hours=1),
        )
    )
    await seed_items(pool, items)

    async with pool.acquire() as conn:
        counts = await level_counts(conn, agreement, start, end)

    assert agreement.service_levels is not None
    calendar = agreement.service_levels.calendar
    assert calendar is not None
    clock = BusinessClock.covering(
        calendar.in_zone(ZONE), start - timedelta(days=120), end + timedelta(days=1)
    )
    expected = []
    for level in agreement.service_levels.levels:
        measured = met = 0
        for item in items:
            if item.item_id == "after" or item.opened_at is None:
                continue
            if item.service_line != level.service_line:
                continue
            if level.complexity is not None and item.complexity not in level.complexity:
                continue
            if level.clock == "business":
                turnaround = clock.elapsed(item.opened_at, item.completed_at)
            else:
                turnaround = item.completed_at - item.opened_at
            measured += 1
            micros = turnaround // timedelta(microseconds=1)
            met += Decimal(micros) <= level.within_hours * 3_600_000_000
        expected.append(LevelCount(measured, met))
    assert counts == expected
    assert counts[0].measured > 500 and 0 < counts[0].met < counts[0].measured
    assert counts[3] == LevelCount(0, 0)  # no hr items: measured 0
    quarter = [i for i in items if i.item_id.startswith("old")]
    assert counts[4].measured - counts[4].met >= len(quarter)  # each over 400 business hours


async def test_no_service_levels_is_none(pool: asyncpg.Pool) -> None:
    plain = parse_agreement(
        {
            "client_id": "slc-plain",
            "currency": "USD",
            "pricing": {
                "weights": {"basic": 1, "standard": 1, "complex": 1},
                "tiers": [{"name": "Only", "fee": "1.00"}],
            },
        }
    )
    start, end = period_bounds(PERIOD, "UTC")
    async with pool.acquire() as conn:
        assert await level_counts(conn, plain, start, end) is None
