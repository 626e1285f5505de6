"""Reclassification at scale: one call that moves `--items` items (SPEC §10), end to end through
metering's use case (`services.metering.reclassifying.Reclassifier`: the locks, the read, the
pure plan, the items' new classes, their history, the counters' deltas and the audit record, in
one transaction), and the note billing then issues for a closed period.

Run: `.venv/bin/python -m bench.reclassify [--items 100000]` (a PostgreSQL of its own from
tools/localinfra; or `DATABASE_URL`).

Three calls, each on a client of its own holding `--items` items in 2026-10 (seven classes as the
demo workload places them, each item with the queue its class comes from), metered through
metering's own write path:
- `to` a class, matching every item of the period (all but those already there move);
- `"rules"` after the agreement's rules changed (every item is classified again, most move);
- `to` a class in a closed, invoiced period, then the note billing issues for it.
Printed: each call's seconds, items moved, items/s, and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import msgspec
import orjson

from bench.close_isolation import CLASSES, database, meter
from services.billing.noting import issue_due_notes
from services.metering.alerts import PeriodUsageCache
from services.metering.counting import MeteredItem
from services.metering.level_alerts import WatchList
from services.metering.reclassifying import Reclassifier
from shared.contracts.reclassification import ReclassificationRequest
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.periods import parse_period, period_bounds
from shared.infra.db import apply_schema, create_pool
from shared.ledger.locks import lock_for_close
from tests.spec_example import spec_body

PERIOD = parse_period("2026-10")
ZONE = "America/New_York"
NOW = datetime(2026, 11, 20, tzinfo=UTC)
QUEUES = {(line, complexity): f"{line} {complexity}" for line, complexity, _ in CLASSES}


def agreement(client: str, *, version: int, flipped: bool = False) -> Agreement:
    """SPEC §3's example with one rule per queue; `flipped` places every queue one complexity
    higher (what a changed agreement might do), so classifying again moves most items."""
    up = {"basic": "standard", "standard": "complex", "complex": "complex"}
    rules = [
        {
            "id": f"q{n}",
            "when": {"queue": queue},
            "then": {"service_line": line, "complexity": up[cx] if flipped else cx},
        }
        for n, ((line, cx), queue) in enumerate(QUEUES.items())
    ]
    body = {**spec_body(client), "classification": {"rules": rules}}
    return parse_agreement(body).with_version(version)


def items(client: str, count: int, seed: int) -> list[MeteredItem]:
    rng = random.Random(seed)
    start, end = period_bounds(PERIOD, ZONE)
    span = (end - start).total_seconds() - 1
    kinds = [(line, cx) for line, cx, share in CLASSES for _ in range(share)]
    made = []
    for n in range(count):
        line, cx = rng.choice(kinds)
        made.append(
            MeteredItem(
                client_id=client,
                item_id=f"{client}-{n:07d}",
                completed_at=start + timedelta(seconds=rng.uniform(0, span)),
                service_line=line,
                complexity=cx,
                units=rng.randint(1, 3),
                handling_seconds=rng.randint(30, 900),
                rule_id="bench",
                agreement_version=1,
                source="bench",
                facts=msgspec.Raw(orjson.dumps({"queue": QUEUES[(line, cx)]})),
            )
        )
    return made


async def load(pool: asyncpg.Pool, client: str, count: int) -> None:
    all_items = items(client, count, seed=hash(client) & 0xFFFF)
    for first in range(0, count, 5000):
        await meter(pool, all_items[first : first + 5000], ZONE)
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE metering.items")


class _Meter:
    def __init__(self) -> None:
        self.usage_cache = PeriodUsageCache()
        self.level_watch = WatchList()
        self.alerts_pending = False

    async def publish_alerts(self) -> None:
        return None


class _Agreements:
    def __init__(self, agreement: Agreement) -> None:
        self.agreement = agreement

    def get(self, client_id: str) -> Agreement:
        return self.agreement


async def call(pool: asyncpg.Pool, current: Agreement, body: dict[str, Any]) -> tuple[float, int]:
    reclassifier = Reclassifier(pool, _Agreements(current), cast(Any, _Meter()), 0.0)
    wanted = ReclassificationRequest.model_validate(body)
    began = time.perf_counter()
    answer = await reclassifier.reclassify(wanted, body, period=PERIOD, made_by="bench", now=NOW)
    return time.perf_counter() - began, answer.items


def report(what: str, seconds: float, moved: int) -> None:
    print(
        f"{what:<44} {seconds:7.2f} s  {moved:>9,} moved  {moved / seconds:>9,.0f} items/s",
        flush=True,
    )


async def run(count: int) -> None:
    async with database() as url:
        pool = await create_pool(url, size=4)
        await apply_schema(pool)
        stamp = int(time.time())
        clients = [f"rc-{kind}-{stamp}" for kind in ("to", "rules", "closed")]
        for client in clients:
            print(f"loading {count:,} items for {client}", flush=True)
            await load(pool, client, count)
        print(f"\nreclassifying {count:,} items in one call each:")
        to, rules, closed = clients
        body = {
            "id": "bench-1",
            "client_id": to,
            "period": PERIOD.key,
            "to": {"service_line": "accounting", "complexity": "standard"},
            "reason": "bench",
        }
        report(
            "to a class (every item of the period)",
            *await call(pool, agreement(to, version=1), body),
        )
        body = {**body, "client_id": rules, "to": "rules"}
        flipped = agreement(rules, version=2, flipped=True)
        report('"rules" after the rules changed', *await call(pool, flipped, body))

        current = agreement(closed, version=1)
        await pool.execute(
            """INSERT INTO billing.agreements (client_id, version, body, published)
               VALUES ($1, 1, $2, true)""",
            closed,
            current.to_wire(),
        )
        await pool.execute(
            """INSERT INTO billing.closed_periods (client_id, period, invoice_id, agreement_version,
                                                   items, billed_total)
               VALUES ($1, $2, $3, 1, $4, 90000.00)""",
            closed,
            PERIOD.key,
            f"{closed}-{PERIOD.key}-1",
            count,
        )
        report(
            "to a class in a closed, invoiced period",
            *await call(
                pool,
                current,
                {**body, "client_id": closed, "to": {"service_line": "hr", "complexity": "basic"}},
            ),
        )
        began = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await lock_for_close(conn, closed)
            [note] = await issue_due_notes(conn, closed, NOW)
        print(
            f"{'its note ' + note.note_id:<44} {time.perf_counter() - began:7.2f} s  "
            f"total {note.total} {note.currency}"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process (the use case, in process): {peak:,.0f} MiB")
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(run(args.items))


if __name__ == "__main__":
    main()
