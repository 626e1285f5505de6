"""The business half of the page (I/O): every client's open period and the recent invoices.

Each client's open period is the calendar month containing now in its agreement's timezone
(UTC without one); its counts come from the ledger exactly as metering's usage API reads them.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import asyncpg

from services.console import store
from services.console.usage import client_usage, sort_key
from shared.ledger import clients_with_usage_between, closed_periods, counts_between
from shared.periods import period_bounds, period_of

#: The page shows at most this many clients (the busiest by projected weighted units).
MAX_CLIENTS = 100


async def business_overview(
    pool: asyncpg.Pool, *, now: datetime, invoices_shown: int
) -> dict[str, Any]:
    async with pool.acquire() as conn:
        agreements = await store.current_agreements(conn)
        utc_start, utc_end = period_bounds(period_of(now, "UTC"), "UTC")
        without_agreement = [
            client
            for client in await clients_with_usage_between(conn, utc_start, utc_end)
            if client not in agreements
        ]
        clients = sorted({*agreements, *without_agreement})
        closed = await closed_periods(conn, clients)
        cards = []
        for client in clients:
            agreement = agreements.get(client)
            tz = agreement.timezone if agreement is not None else "UTC"
            period = period_of(now, tz)
            start, end = period_bounds(period, tz)
            cards.append(
                client_usage(
                    client_id=client,
                    agreement=agreement,
                    period=period,
                    start=start,
                    end=end,
                    now=now,
                    counts=await counts_between(conn, client, start, end),
                    closed=(client, period.key) in closed,
                )
            )
        invoices = await store.recent_invoices(conn, invoices_shown)
    cards.sort(key=sort_key)
    return {"clients": len(cards), "usage": cards[:MAX_CLIENTS], "invoices": invoices}


class CachedOverview:
    """At most one database pass per `ttl` seconds, however many pages poll."""

    def __init__(self, pool: asyncpg.Pool, *, invoices_shown: int, ttl: float) -> None:
        self.pool = pool
        self.invoices_shown = invoices_shown
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    async def get(self, now: datetime) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.ttl:
                self._value = await business_overview(
                    self.pool, now=now, invoices_shown=self.invoices_shown
                )
                self._at = time.monotonic()
            return self._value
