"""How fast the ledger grows: bytes per item in PostgreSQL, and per year at a given volume.

    .venv/bin/python -m bench.ledger_growth                   # 1,000,000 items, 250 clients
    .venv/bin/python -m bench.ledger_growth --items 200000 --json /tmp/growth.json

A private PostgreSQL (tools/localinfra; or DATABASE_URL, into which it writes a schema's worth
of rows and leaves them), shared/ledger/schema.sql applied as the services apply it. Items as the
demo and bench workloads make them (tools/workload.stream_items: queue, title, source, units,
handling time, opened_at), each placed in a class by its queue, are counted by metering's own
statement (services/metering/store.count: the dedupe insert into metering.items and the
day counters in metering.usage_days), 5,000 a transaction like metering's batches,
then VACUUM ANALYZE as autovacuum would.

The items are spread over the share of a month they would fill at `--monthly-items`
(1,000,000 of 100,000,000 a month: 7.2 hours), so the day rows per item are those of that volume
over `--clients` clients. Printed: bytes per item of metering.items (heap with TOAST, its primary
key and items_by_time), of metering.usage_days, of the narrow key table the retirement plan keeps
for good (deploy/README.md), and each per year at `--monthly-items`.

Figures: deploy/README.md, "A plan past one database".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec

from services.metering.counting import Facts, MeteredItem
from services.metering.store import count
from shared.infra.db import apply_schema, create_pool
from tools.workload import stream_items

BATCH: Final = 5000
MONTH_SECONDS: Final = 30 * 86400
START: Final = datetime(2026, 10, 1, tzinfo=UTC)
#: Where the demo agreements place each queue's items (deploy/demo/*.yaml), "unclassified" for
#: a share of them: the classes an item lands in decide the day rows.
CLASS_OF_QUEUE: Final = {
    "Customer Care": ("customer_support", "basic", "care-basic"),
    "Chat": ("customer_support", "standard", "chat"),
    "Data Entry": ("data_entry", "standard", "keying"),
    "AP Invoices": ("accounting", "complex", "ap-invoices"),
    "IT Service Desk": ("it_support", "basic", "it-desk"),
    "Payroll": ("hr", "standard", "payroll"),
    "Procurement": ("procurement", "basic", None),  # no rule: unclassified
}
_encode = msgspec.json.Encoder().encode


@dataclass
class Growth:
    items: int
    clients: int
    monthly_items: int
    postgres: str
    items_heap_bytes: int
    items_pkey_bytes: int
    items_by_time_bytes: int
    day_rows: int
    days_heap_bytes: int
    days_index_bytes: int
    keys_only_bytes: int
    mean_item_id_chars: float

    @property
    def items_total(self) -> int:
        return self.items_heap_bytes + self.items_pkey_bytes + self.items_by_time_bytes

    @property
    def days_total(self) -> int:
        return self.days_heap_bytes + self.days_index_bytes

    def per_item(self, total: int) -> float:
        return total / self.items

    def per_year(self, total: int) -> float:
        """Bytes a year at `monthly_items`."""
        return self.per_item(total) * self.monthly_items * 12


def metered_items(items: int, clients: int, monthly_items: int) -> Iterator[MeteredItem]:
    """`items` items of `clients` clients, completed over the share of a month they fill."""
    window = timedelta(seconds=MONTH_SECONDS * min(1.0, items / monthly_items))
    names = [f"client-{n:03d}" for n in range(clients)]
    rng = random.Random(5)
    for raw in stream_items(names, START, START + window, items, duplicate_ratio=0.0, opened=True):
        queue, title = str(raw["queue"]), str(raw["title"])
        line, complexity, rule = CLASS_OF_QUEUE[queue]
        completed = datetime.fromisoformat(str(raw["completed_at"]))
        units, handling = raw["units"], raw["handling_seconds"]
        assert isinstance(units, int) and isinstance(handling, int)
        yield MeteredItem(
            client_id=str(raw["client_id"]),
            item_id=str(raw["id"]),
            completed_at=completed,
            service_line=line if rule else "unclassified",
            complexity=complexity if rule else "none",
            units=units,
            handling_seconds=handling,
            rule_id=rule,
            agreement_version=1 if rule else None,
            received_at=completed + timedelta(seconds=rng.uniform(0.05, 30)),
            source=str(raw["source"]),
            opened_at=datetime.fromisoformat(str(raw["opened_at"])),
            facts=msgspec.Raw(_encode(Facts(queue=queue, title=title))),
        )


async def measure(url: str, items: int, clients: int, monthly_items: int) -> Growth:
    pool = await create_pool(url, size=2)
    try:
        await apply_schema(pool)
        began, done, id_chars = time.monotonic(), 0, 0
        batch: list[MeteredItem] = []

        async def flush() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await count(conn, batch, timezone_of=lambda _: "UTC")

        for item in metered_items(items, clients, monthly_items):
            batch.append(item)
            id_chars += len(item.item_id)
            if len(batch) == BATCH:
                await flush()
                done += len(batch)
                batch = []
                if done % 100_000 == 0:
                    print(f"  {done:,} items counted ({time.monotonic() - began:.0f} s)")
        if batch:
            await flush()
        await pool.execute("VACUUM ANALYZE metering.items")
        await pool.execute("VACUUM ANALYZE metering.usage_days")
        # The narrow table the retirement plan keeps for good: the idempotency keys alone.
        await pool.execute(
            """DROP TABLE IF EXISTS public.growth_item_keys;
               CREATE TABLE public.growth_item_keys AS
                   SELECT client_id, item_id FROM metering.items ORDER BY client_id, item_id;
               ALTER TABLE public.growth_item_keys ADD PRIMARY KEY (client_id, item_id)"""
        )
        await pool.execute("VACUUM ANALYZE public.growth_item_keys")
        row = await pool.fetchrow(
            """SELECT (SELECT count(*) FROM metering.items) AS items,
                      pg_table_size('metering.items') AS items_heap,
                      pg_relation_size('metering.items_pkey') AS items_pkey,
                      pg_relation_size('metering.items_by_time') AS items_by_time,
                      (SELECT count(*) FROM metering.usage_days) AS day_rows,
                      pg_table_size('metering.usage_days') AS days_heap,
                      pg_indexes_size('metering.usage_days') AS days_index,
                      pg_total_relation_size('public.growth_item_keys') AS keys_only,
                      current_setting('server_version') AS version"""
        )
        assert row is not None
        await pool.execute("DROP TABLE public.growth_item_keys")
        assert row["items"] == items, f"{row['items']} items in the ledger, {items} counted"
        return Growth(
            items=items,
            clients=clients,
            monthly_items=monthly_items,
            postgres=row["version"],
            items_heap_bytes=row["items_heap"],
            items_pkey_bytes=row["items_pkey"],
            items_by_time_bytes=row["items_by_time"],
            day_rows=row["day_rows"],
            days_heap_bytes=row["days_heap"],
            days_index_bytes=row["days_index"],
            keys_only_bytes=row["keys_only"],
            mean_item_id_chars=id_chars / items,
        )
    finally:
        await pool.close()


@contextmanager
def database() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from tools.localinfra import LocalPostgres

    with tempfile.TemporaryDirectory(prefix="tierline-growth-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as nobody when we are root
        with LocalPostgres(Path(tmp) / "postgres") as postgres:
            yield postgres.url


def report(g: Growth) -> str:
    gib = 1024**3
    lines = [
        f"PostgreSQL {g.postgres}: {g.items:,} items of {g.clients} clients, completed over "
        f"{min(1.0, g.items / g.monthly_items) * 30 * 24:.1f} h (the density of "
        f"{g.monthly_items:,} items a month); item ids {g.mean_item_id_chars:.1f} characters",
        "",
        f"{'':42} {'bytes/item':>10} {'GiB/year':>9}",
    ]
    for name, total in (
        ("metering.items heap (with TOAST)", g.items_heap_bytes),
        ("  primary key (client_id, item_id)", g.items_pkey_bytes),
        ("  items_by_time", g.items_by_time_bytes),
        ("metering.items in all", g.items_total),
        (f"metering.usage_days ({g.day_rows / g.items:.3f} rows/item)", g.days_total),
        ("items + usage_days", g.items_total + g.days_total),
        ("keys only (client_id, item_id)", g.keys_only_bytes),
    ):
        lines.append(f"{name:42} {g.per_item(total):>10.1f} {g.per_year(total) / gib:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=250)
    parser.add_argument("--monthly-items", type=int, default=100_000_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with database() as url:
        growth = asyncio.run(measure(url, args.items, args.clients, args.monthly_items))
    print(report(growth))
    if args.json:
        args.json.write_text(json.dumps(asdict(growth), indent=2) + "\n")


if __name__ == "__main__":
    main()
