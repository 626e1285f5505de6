"""Close isolation: how long metering for one client waits while another client's period closes.

Run: `.venv/bin/python -m bench.close_isolation [--items 1000000]` (a PostgreSQL of its own from
tools/localinfra, durable settings as in bench/run.py; or `DATABASE_URL`).

What is loaded: SPEC §3's example agreement for client A (America/New_York) and for client B,
then `--items` work items for A in 2026-10 (completed_at spread uniformly over the month in A's
timezone, seven classes as the demo workload places them, units 1..3), metered through metering's
own write path (`services.metering.store.count`, in transactions of `--batch` items), so
`metering.items` and `metering.usage_days` hold exactly the rows metering would have after
counting them; then VACUUM ANALYZE, as autovacuum would do on a live system. With `--history N`,
first N earlier months of `--history-items` items each, each closed (invoiced) through billing's
close: a client with a past, whose close the old code re-read month by month.

What is measured: A's 2026-10 is closed through billing's own close
(`services.billing.closing.close_for_client`) while one task meters B — batches of 1..5 items
in B's open period, each in its own transaction through the same store write path, one after the
other — and times every B write. Printed: the close's duration, how many B writes completed during
it, their latency p50/p99/max, and the longest time one B write took that overlapped the close
(the longest B waited); the B write latency before the close is the baseline.

Figures, 2026-12-02, 2 cores shared with other work, PostgreSQL 15 on the same machine, full
size (1,000,000 items, 20,832 rows of 15-minute slots, the ledger then); before = c22bd20
(table-wide SHARE lock, every invoiced period re-read), after = per-client close lock, read →
decide → write. Same script, run in turn:

                                    before      after       before      after
    earlier invoiced months         0           0           24          24
    close duration                  71.1 ms     34.1 ms     165.4 ms    72.7 ms
    B writes completed during it    2           13          1           13
    B latency p50 / p99 during it   11.7 / 59.3 2.5 / 3.6   85.2 / 160.8 6.0 / 10.8 ms
    longest B waited                60.3 ms     3.6 ms      162.4 ms    10.9 ms
    B p50 before the close          1.2 ms      1.3 ms      3.6 ms      1.6 ms

Before, B's longest wait is the close's duration (B holds still while any close runs); after, it
is B's own latency under load (a first "24, after" run under heavier load: close 127.6 ms,
longest B wait 22.1 ms). bench/CLOSE-ISOLATION.md has the same table (RESULTS.md is rewritten
by each `./tierline bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from services.billing import store as billing_store
from services.billing.closing import close_for_client
from services.metering import store as metering_store
from services.metering.counting import MeteredItem
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, parse_period, period_bounds
from shared.infra.db import apply_schema, create_pool
from tests.spec_example import spec_body

PERIOD = parse_period("2026-10")
A, B = "bench-close-a", "bench-close-b"
A_ZONE = "America/New_York"
#: The classes the demo workload's rules place items in, with rough shares.
CLASSES = (
    ("customer_support", "basic", 40),
    ("customer_support", "standard", 20),
    ("data_entry", "standard", 15),
    ("accounting", "complex", 5),
    ("it_support", "basic", 10),
    ("hr", "standard", 5),
    ("procurement", "basic", 5),
)


@dataclass
class Write:
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def fresh_dir() -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-close-isolation-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    return data_dir


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    from tools.localinfra import LocalPostgres

    data_dir = fresh_dir()
    postgres = LocalPostgres(data_dir / "postgres")
    try:
        yield postgres.start().url
    finally:
        postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def a_items(count: int, first: int, seed: int, period: Period = PERIOD) -> list[MeteredItem]:
    rng = random.Random(seed)
    start, end = period_bounds(period, A_ZONE)
    span = (end - start).total_seconds() - 1
    kinds = [(line, complexity) for line, complexity, share in CLASSES for _ in range(share)]
    items = []
    for n in range(first, first + count):
        line, complexity = rng.choice(kinds)
        items.append(
            MeteredItem(
                client_id=A,
                item_id=f"a-{period.key}-{n}",
                completed_at=start + timedelta(seconds=rng.uniform(0, span)),
                service_line=line,
                complexity=complexity,
                units=rng.randint(1, 3),
                handling_seconds=rng.randint(30, 900),
                rule_id="bench",
                agreement_version=1,
            )
        )
    return items


async def meter(pool: asyncpg.Pool, batch: list[MeteredItem], zone: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return len(await metering_store.count(conn, batch, timezone_of=lambda _: zone))


async def load(pool: asyncpg.Pool, items: int, batch: int, period: Period = PERIOD) -> float:
    began = time.perf_counter()
    for first in range(0, items, batch):
        size = min(batch, items - first)
        await meter(pool, a_items(size, first, seed=first, period=period), A_ZONE)
        if (first // batch) % 20 == 0:
            print(f"  loaded {first + size:,} / {items:,}", flush=True)
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE metering.usage_days")
        await conn.execute("VACUUM ANALYZE metering.items")
    return time.perf_counter() - began


async def meter_b(pool: asyncpg.Pool, stop: asyncio.Event, writes: list[Write]) -> None:
    rng = random.Random(11)
    at = datetime(2026, 11, 10, tzinfo=UTC)
    n = 0
    while not stop.is_set():
        size = rng.randint(1, 5)
        batch = [
            MeteredItem(
                B, f"b-{n + k}", at + timedelta(seconds=n + k), "hr", "basic", 1, 60, None, 1
            )
            for k in range(size)
        ]
        n += size
        started = time.perf_counter()
        await meter(pool, batch, "UTC")
        writes.append(Write(started, time.perf_counter()))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def history(pool: asyncpg.Pool, months: int, items: int, batch: int) -> None:
    """`months` invoiced periods before PERIOD, `items` each, closed through billing's close."""
    periods = [PERIOD]
    for _ in range(months):
        periods.insert(0, periods[0].previous())
    for period in periods[:-1]:
        await load(pool, items, batch, period)
        async with pool.acquire() as conn:
            await close_for_client(conn, client_id=A, period=period, now=datetime.now(UTC))
    print(f"  {months} earlier periods of {items:,} items each, invoiced")


async def run(items: int, batch: int, months: int, history_items: int) -> None:
    async with database() as url:
        pool = await create_pool(url, size=6)
        try:
            await apply_schema(pool)
            async with pool.acquire() as conn:
                for client in (A, B):
                    body = {**spec_body(client), "timezone": A_ZONE if client == A else "UTC"}
                    await billing_store.store_agreement(conn, Agreement.model_validate(body))
            if months:
                await history(pool, months, history_items, batch)
            print(f"loading {items:,} items for {A} in {PERIOD.key} ({batch:,} a transaction)")
            print(f"  loaded in {await load(pool, items, batch):.1f} s")
            rows = await pool.fetchval(
                """SELECT count(*) FROM metering.usage_days
                    WHERE client_id = $1 AND day >= date_bin('24 hours', $2, timestamptz 'epoch')
                      AND day < $3""",
                A,
                *period_bounds(PERIOD, A_ZONE),
            )

            stop = asyncio.Event()
            writes: list[Write] = []
            writer = asyncio.create_task(meter_b(pool, stop, writes))
            await asyncio.sleep(1.0)  # B's baseline
            async with pool.acquire() as conn:
                close_began = time.perf_counter()
                outcome = await close_for_client(
                    conn, client_id=A, period=PERIOD, now=datetime.now(UTC)
                )
                close_ended = time.perf_counter()
            await asyncio.sleep(0.5)
            stop.set()
            await writer
        finally:
            await pool.close()

    assert outcome.invoice is not None and outcome.newly_closed, outcome
    before = [w.seconds for w in writes if w.ended < close_began]
    during = [w for w in writes if w.started < close_ended and w.ended > close_began]
    completed = [w for w in writes if close_began <= w.ended <= close_ended]
    latencies = [w.seconds for w in during]
    print()
    print(f"close of {A} {PERIOD.key}: {items:,} items in {rows:,} day rows; {months} earlier")
    print(f"  invoice total {outcome.invoice.total} {outcome.invoice.currency}")
    print(f"close duration:                 {ms(close_ended - close_began)}")
    print(f"B writes before the close:      {len(before)}, p50 {ms(quantile(before, 0.5))}")
    print(f"B writes completed during it:   {len(completed)}")
    print(f"B writes overlapping it:        {len(during)}")
    print(
        f"B write latency during close:   p50 {ms(quantile(latencies, 0.5))}, "
        f"p99 {ms(quantile(latencies, 0.99))}, max {ms(max(latencies, default=0.0))}"
    )
    print(f"longest B waited (overlapping): {ms(max(latencies, default=0.0))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--history", type=int, default=0, help="invoiced periods before the one closed"
    )
    parser.add_argument("--history-items", type=int, default=20_000, help="items in each")
    args = parser.parse_args()
    asyncio.run(run(args.items, args.batch, args.history, args.history_items))


if __name__ == "__main__":
    main()
