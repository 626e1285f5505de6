"""Phase 3, closing the period that holds the throughput phase's items."""

from __future__ import annotations

import time

import httpx

from bench.common import CLIENTS, Results, say
from shared.domain.periods import Period
from tools.supervisor import Stack


async def close_phase(
    stack: Stack, http: httpx.AsyncClient, period: Period, results: Results, items: int
) -> None:
    say(f"close: closing {period.key} ({items:,} items over {CLIENTS} clients)")
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    started = time.monotonic()
    response = await http.post(
        f"{stack.url('billing')}/v1/periods/{period.key}/close", headers=headers, timeout=600
    )
    elapsed = time.monotonic() - started
    response.raise_for_status()
    invoices = response.json()["invoices"]
    results.close = {
        "period": period.key,
        "items": items,
        "invoices": len(invoices),
        "seconds": round(elapsed, 3),
    }
    say(f"close: {results.close}")
