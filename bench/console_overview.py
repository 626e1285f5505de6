"""The console's `/api/overview` business half with many clients, in a real PostgreSQL.

    .venv/bin/python -m bench.console_overview --clients 4200

Starts a PostgreSQL of its own (tools/localinfra/) unless DATABASE_URL is set, stores one
agreement version per client and eight days of usage rows for each, then times
`business_overview`: the first run (every agreement parsed) and the median of the rest.
Prints the figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from services.console.business import business_overview
from services.console.store import AgreementCache
from shared.domain.periods import period_bounds, period_of
from shared.infra.db import apply_schema, create_pool
from tools.supervisor import REPO_ROOT

CLASSES = [("customer_support", "basic"), ("data_entry", "standard"), ("accounting", "complex")]


async def measure(database_url: str, clients: int, runs: int) -> list[float]:
    pool = await create_pool(database_url, size=2)
    try:
        await apply_schema(pool)
        demo = yaml.safe_load((REPO_ROOT / "deploy/demo/acme.yaml").read_text())
        now = datetime.now(UTC)
        start, _ = period_bounds(period_of(now, "America/New_York"), "America/New_York")
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE billing.agreements, metering.usage_days")
            ids = [f"client-{n:05d}" for n in range(clients)]
            await conn.executemany(
                "INSERT INTO billing.agreements (client_id, version, body) VALUES ($1, 1, $2)",
                [
                    (
                        cid,
                        json.loads(
                            json.dumps({**demo, "client_id": cid, "version": 1}, default=str)
                        ),
                    )
                    for cid in ids
                ],
            )
            first_day = start.astimezone(UTC).replace(hour=0, minute=0) + timedelta(days=1)
            days = [
                (cid, first_day + timedelta(days=n), line, level, 3, 3, 60, 0)
                for cid in ids
                for n in range(8)
                for line, level in CLASSES
            ]
            await conn.copy_records_to_table(
                "usage_days",
                schema_name="metering",
                columns=[
                    "client_id",
                    "day",
                    "service_line",
                    "complexity",
                    "items",
                    "units",
                    "handling_seconds",
                    "late_items",
                ],
                records=days,
            )
            await conn.execute("ANALYZE")
        timings = []
        cache: AgreementCache = {}  # as the console keeps it between polls: the first run is cold
        for _ in range(runs):
            started = time.perf_counter()
            overview = await business_overview(
                pool, now=now, invoices_shown=20, agreement_cache=cache
            )
            timings.append(time.perf_counter() - started)
        assert overview.clients == clients, overview.clients
        return timings
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        timings = asyncio.run(measure(database_url, args.clients, args.runs))
    else:
        from tools.localinfra import LocalInfra

        with tempfile.TemporaryDirectory() as data:
            os.chmod(data, 0o755)  # PostgreSQL runs as another user when we are root
            with LocalInfra(Path(data), kafka=False) as infra:
                timings = asyncio.run(measure(infra.database_url, args.clients, args.runs))
    warm = timings[1:] or timings
    print(
        f"business_overview over {args.clients} clients: first (agreements not yet parsed) "
        f"{timings[0]:.3f}s; then median {statistics.median(warm):.3f}s, "
        f"min {min(warm):.3f}s, max {max(warm):.3f}s ({len(warm)} runs)"
    )


if __name__ == "__main__":
    main()
