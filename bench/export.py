"""The items export (SPEC §10): how fast metering streams a period's items, and in how much memory.

    .venv/bin/python -m bench.export                      # 1,000,000 items
    .venv/bin/python -m bench.export --items 20000 --json /tmp/export.json

A Kafka and a PostgreSQL of its own (tools/localinfra; or KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL), billing and metering as processes (tools/supervisor.py), SPEC §3's example
agreement PUT through billing for one client (metering's view reads it from the `agreements`
topic: its timezone places the period, its weights weigh each item). Then `--items` items of
that client are written straight into `metering.items` with COPY (tests/items_ledger.py:
every class, some unclassified, units 1..40 on data_entry's units basis, fractional seconds,
1 % with a change of class in `metering.item_history`), VACUUM ANALYZE as autovacuum would.

Measured, over HTTP from this process: `GET /v1/items?client_id=&period=` with `Accept:
text/csv`, then with `application/x-ndjson` — every item in one response each. Printed: items,
seconds, items/s, MB and MB/s, and metering's peak resident memory while it streamed (VmRSS from
/proc/<pid>/status, sampled every 20 ms) next to its resident memory before.

Figures, 2026-12-02, 2 cores shared with other work, PostgreSQL 15 on the same machine,
1,000,000 items (the machine is a shared VM: runs differ):

    csv    1,000,000 items in 5.63 s  = 177,672 items/s, 182.9 MB (32.5 MB/s);
           metering RSS 72 MiB before, 73 MiB peak
    ndjson 1,000,000 items in 15.69 s =  63,741 items/s, 420.6 MB (26.8 MB/s);
           metering RSS 73 MiB before, 78 MiB peak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.run import infrastructure
from shared.domain.periods import parse_period, period_bounds
from tests.items_ledger import LedgerChange, LedgerItem, seed_changes, seed_items
from tests.spec_example import spec_body
from tools.items_cli import RowCounter
from tools.localinfra import free_port
from tools.supervisor import SERVICES, Stack

PERIOD = parse_period("2026-10")
ZONE = "America/New_York"  # SPEC §3's example agreement's
#: The classes items land in, with rough shares (the demo workload's mix), and an unclassified few.
CLASSES = (
    ("customer_support", "basic", 40),
    ("customer_support", "standard", 20),
    ("data_entry", "standard", 15),
    ("accounting", "complex", 5),
    ("it_support", "basic", 10),
    ("hr", "standard", 5),
    ("procurement", "basic", 4),
    ("unclassified", "none", 1),
)
SOURCES = ("servicenow", "zendesk", "jira")


@dataclass
class Figures:
    form: str
    items: int
    seconds: float
    bytes: int
    rss_before_mib: float
    peak_rss_mib: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    def line(self) -> str:
        return (
            f"{self.form:<6} {self.items:>9,} items in {self.seconds:6.2f} s = "
            f"{self.items_per_s:>9,.0f} items/s, {self.bytes / 1e6:8,.1f} MB "
            f"({self.bytes / 1e6 / self.seconds:6,.1f} MB/s); metering RSS "
            f"{self.rss_before_mib:.0f} MiB before, {self.peak_rss_mib:.0f} MiB peak"
        )


def say(message: str) -> None:
    print(f"[export {time.strftime('%H:%M:%S')}] {message}", flush=True)


def items_of(client: str, count: int) -> Iterator[LedgerItem]:
    """`count` items spread evenly over the period (in the client's zone), every class, in the
    order they completed — as metering writes them, so the table is laid out roughly in time
    order, as it is in production."""
    start, end = period_bounds(PERIOD, ZONE)
    step_us = int((end - start).total_seconds() * 1e6) // max(count, 1)
    kinds = [(line, complexity) for line, complexity, share in CLASSES for _ in range(share)]
    for n in range(count):
        line, complexity = kinds[(n * 7) % len(kinds)]
        classified = line != "unclassified"
        completed = start + timedelta(microseconds=n * step_us + n % 7 * 1000 % step_us)
        yield LedgerItem(
            client,
            f"T-{n:08d}",
            completed,
            service_line=line,
            complexity=complexity,
            units=1 + n % 40,
            rule_id=f"builtin:{line}" if classified else None,
            agreement_version=1,
            received_at=completed + timedelta(milliseconds=150 + n % 500),
            source=SOURCES[n % len(SOURCES)],
            opened_at=completed - timedelta(hours=1 + n % 30) if n % 2 else None,
            handling_seconds=60 * (1 + n % 90) if n % 3 else None,
        )


def changes_of(client: str, count: int) -> Iterator[LedgerChange]:
    """One change of class for 1 % of the items."""
    start, _ = period_bounds(PERIOD, ZONE)
    for n in range(0, count, 100):
        yield LedgerChange(
            client,
            f"T-{n:08d}",
            start + timedelta(days=35, seconds=n),
            "customer_support",
            "basic",
            "customer_support",
            "standard",
            f"rc-{n}",
            "client dispute: longer calls",
        )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_peak(pid: int, stop: asyncio.Event) -> float:
    peak = 0.0
    while not stop.is_set():
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.02)
    return max(peak, rss_mib(pid))


async def export(
    http: httpx.AsyncClient, url: str, params: dict[str, str], form: str, pid: int
) -> Figures:
    media = {"csv": "text/csv", "ndjson": "application/x-ndjson"}[form]
    counter = RowCounter(csv=form == "csv")
    size = 0
    before = rss_mib(pid)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak(pid, stop))
    started = time.perf_counter()
    async with http.stream(
        "GET", f"{url}/v1/items", params=params, headers={"Accept": media}
    ) as answer:
        answer.raise_for_status()
        async for chunk in answer.aiter_raw():
            counter.add(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - started
    stop.set()
    peak = await sampler
    return Figures(form, counter.records, seconds, size, before, peak)


async def wait_for_agreement(http: httpx.AsyncClient, url: str, client: str) -> None:
    """Until metering's view holds the client's agreement (the usage report has a tier)."""
    for _ in range(600):
        report = (await http.get(f"{url}/v1/usage/{client}", params={"period": PERIOD.key})).json()
        if report["tier"] is not None:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"metering never saw the agreement of {client}")


async def run(args: argparse.Namespace, data_dir: Path) -> list[Figures]:
    with infrastructure(data_dir) as (kafka, database, _infra):
        stack = Stack(
            kafka,
            database,
            data_dir / "logs",
            ports={name: free_port() for name in SERVICES},
            extra_env={"LOG_LEVEL": "WARNING", "BILLING_AUTO_CLOSE": "false"},
        )
        try:
            say("starting billing and metering")
            stack.start(("billing", "metering"))
            client = f"bench-export-{args.tag}"
            admin = {"Authorization": f"Bearer {stack.admin_key}"}
            metering = stack.url("metering")
            pid = stack.processes["metering"].pid
            assert pid is not None
            async with httpx.AsyncClient(timeout=600, headers=admin) as http:
                response = await http.put(
                    f"{stack.url('billing')}/v1/agreements/{client}", json=spec_body(client)
                )
                response.raise_for_status()
                await wait_for_agreement(http, metering, client)
                say(f"writing {args.items:,} items of {client} into metering.items (COPY)")
                began = time.perf_counter()
                pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
                assert pool is not None
                try:
                    await seed_items(pool, items_of(client, args.items))
                    await seed_changes(pool, changes_of(client, args.items))
                    await pool.execute("VACUUM ANALYZE metering.items")
                    await pool.execute("VACUUM ANALYZE metering.item_history")
                finally:
                    await pool.close()
                say(f"written in {time.perf_counter() - began:.1f} s")
                params = {"client_id": client, "period": PERIOD.key}
                figures = []
                for form in args.forms:
                    result = await export(http, metering, params, form, pid)
                    if result.items != args.items:
                        raise AssertionError(f"{form}: {result.items} items, not {args.items}")
                    say(result.line())
                    figures.append(result)
                return figures
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument(
        "--forms",
        type=lambda text: [f for f in text.split(",") if f],
        default=["csv", "ndjson"],
        help="exports to time, in order (default csv,ndjson)",
    )
    parser.add_argument("--tag", default=uuid.uuid4().hex[:6], help="client id tag of this run")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if set(args.forms) - {"csv", "ndjson"}:
        parser.error("--forms takes csv and ndjson")
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-bench-export-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    try:
        figures = asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        document: dict[str, Any] = {
            f.form: {**asdict(f), "items_per_s": round(f.items_per_s)} for f in figures
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(f.line() for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
