"""Phase 3, closing the period that holds the first throughput run's items, while other clients'
items keep arriving and being metered: the close's duration, and how those items fared during it
(how many were counted while it ran, their latency from intake's receipt to counted)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.common import CLIENTS, Results, say, tagged
from services.billing.barrier import wait_until_metered
from shared.domain.periods import Period, period_bounds
from tools.supervisor import Stack
from tools.workload import stream_items

#: Items/s of other clients posted while the period closes (a request every 50 ms).
BACKGROUND_RATE = 2_000


async def close_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    period: Period,
    other: Period,
    results: Results,
    items: int,
) -> None:
    say(
        f"close: closing {period.key} ({items:,} items over {CLIENTS} clients) while "
        f"{BACKGROUND_RATE:,} items/s of other clients arrive"
    )
    # What earlier phases sent (the profile's burst) is metered first: the close's own barrier
    # would otherwise wait for that backlog, and its time is not the close's.
    await wait_until_metered(stack.kafka, timeout=600)
    prefix = tagged("closebg")
    stop = asyncio.Event()
    background = asyncio.create_task(post_steadily(stack, http, prefix, other, stop))
    await asyncio.sleep(2)  # the background flow is being metered before the close starts
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    began = datetime.now(UTC)
    started = time.monotonic()
    response = await http.post(
        f"{stack.url('billing')}/v1/periods/{period.key}/close", headers=headers, timeout=600
    )
    elapsed = time.monotonic() - started
    ended = datetime.now(UTC)
    await asyncio.sleep(1)
    stop.set()
    await background
    response.raise_for_status()
    invoices = response.json()["invoices"]
    during = await pool.fetchrow(
        """SELECT count(*) AS items,
                  percentile_cont(0.99) WITHIN GROUP
                      (ORDER BY extract(epoch FROM metered_at - received_at)) AS p99,
                  max(extract(epoch FROM metered_at - received_at)) AS worst
             FROM metering.items
            WHERE client_id LIKE $1 AND metered_at BETWEEN $2 AND $3""",
        f"{prefix}%",
        began,
        ended,
    )
    assert during is not None
    results.close = {
        "period": period.key,
        "items": items,
        "invoices": len(invoices),
        "seconds": round(elapsed, 3),
        "metered_during": during["items"],
        "metered_during_p99_ms": round(float(during["p99"] or 0) * 1000, 1),
        "metered_during_max_ms": round(float(during["worst"] or 0) * 1000, 1),
        **close_account(stack.log_dir / "billing.log", period),
    }
    say(f"close: {results.close}")


async def post_steadily(
    stack: Stack, http: httpx.AsyncClient, prefix: str, period: Period, stop: asyncio.Event
) -> None:
    """Post BACKGROUND_RATE items/s for the clients `prefix`… in `period` until `stop`."""
    start, end = period_bounds(period, "UTC")
    clients = [f"{prefix}{n}" for n in range(CLIENTS)]
    per_request = BACKGROUND_RATE // 20
    stream = stream_items(clients, start, end, 10_000_000, seed=7, duplicate_ratio=0.0)
    url = f"{stack.url('intake')}/v1/work-items"
    headers = {"Authorization": f"Bearer {stack.intake_key}", "Content-Type": "application/json"}
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        body = [{**next(stream)} for _ in range(per_request)]
        for item in body:
            item["id"] = f"{prefix}{item['id']}"
        response = await http.post(url, content=orjson.dumps(body), headers=headers)
        response.raise_for_status()
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * 0.05 - time.monotonic()))


def close_account(billing_log: Path, period: Period) -> dict[str, Any]:
    """Billing's log line of the close: how long each step took (`steps_ms`: barrier, close,
    publish, answer) and billing's CPU time over it (`billing_cpu_ms`); empty when it logged
    none."""
    found: dict[str, Any] = {}
    for line in billing_log.read_text(errors="replace").splitlines():
        if '"steps_ms"' in line:
            entry = orjson.loads(line)
            if entry.get("period") == period.key:
                found = {"steps_ms": entry["steps_ms"], "billing_cpu_ms": entry.get("cpu_ms")}
    return found
