"""The business half of the page (I/O): every client's open period, the review queues and the
recent invoices.

Each client's open period is the calendar month containing now in its agreement's timezone
(UTC without one); its counts come from the ledger exactly as metering's usage API reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

import asyncpg

from services.console import store
from services.console.documents import BusinessOverview
from services.console.usage import (
    OpenPeriod,
    client_usage,
    projected_weighted_units,
    review_queues,
    sort_key,
)
from shared.domain.periods import parse_period, period_bounds, period_of
from shared.ledger.reads import clients_with_usage_between, closed_periods, counts_for_ranges

#: The page shows at most this many clients (the busiest by projected weighted units).
MAX_CLIENTS = 100


async def business_overview(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    invoices_shown: int,
    agreement_cache: store.AgreementCache | None = None,
) -> BusinessOverview:
    """A handful of set-based reads whatever the number of clients (agreements, clients with
    usage, closed periods, every client's open-period and last-closed-period counts in one
    query, invoices), then the cards in pure code: every client is ranked by projected weighted
    units, and only the MAX_CLIENTS busiest get a full card (tier decisions and the tier
    ladder); the review queues are every client's unclassified items in those two periods."""
    async with pool.acquire() as conn:
        agreements = await store.current_agreements(conn, agreement_cache)
        utc_start, utc_end = period_bounds(period_of(now, "UTC"), "UTC")
        without_agreement = [
            client
            for client in await clients_with_usage_between(conn, utc_start, utc_end)
            if client not in agreements
        ]
        clients = sorted({*agreements, *without_agreement})
        bounds = {}
        for client in clients:
            agreement = agreements.get(client)
            tz = agreement.timezone if agreement is not None else "UTC"
            period = period_of(now, tz)
            bounds[client] = (period, *period_bounds(period, tz))
        closed = await closed_periods(conn, clients)
        last_closed = _last_closed(closed, {c: period.key for c, (period, _, _) in bounds.items()})
        ranges = [
            (client, period.key, start, end) for client, (period, start, end) in bounds.items()
        ]
        for client, key in last_closed.items():
            tz = agreements[client].timezone if client in agreements else "UTC"
            ranges.append((client, key, *period_bounds(parse_period(key), tz)))
        counts = await counts_for_ranges(conn, ranges)
        invoices = await store.recent_invoices(conn, invoices_shown)
    open_periods = {
        client: OpenPeriod(agreements.get(client), period, start, end, counts[(client, period.key)])
        for client, (period, start, end) in bounds.items()
    }
    ranked = sorted(
        open_periods,
        key=lambda client: (-projected_weighted_units(open_periods[client], now), client),
    )
    cards = [
        client_usage(
            client_id=client,
            open_period=open_periods[client],
            now=now,
            closed=(client, open_periods[client].period.key) in closed,
        )
        for client in ranked[:MAX_CLIENTS]
    ]
    cards.sort(key=sort_key)
    queues = review_queues(
        open_periods,
        {client: (key, counts[(client, key)]) for client, key in last_closed.items()},
        limit=MAX_CLIENTS,
    )
    return BusinessOverview(
        clients=len(open_periods), usage=cards, invoices=invoices, review_queue=queues
    )


def _last_closed(closed: Iterable[tuple[str, str]], open_keys: Mapping[str, str]) -> dict[str, str]:
    """Each client's latest closed period other than its open one (client → period key)."""
    latest: dict[str, str] = {}
    for client, key in closed:
        if key != open_keys.get(client) and key > latest.get(client, ""):
            latest[client] = key
    return latest


class CachedOverview:
    """At most one database pass per `ttl` seconds, however many pages poll."""

    def __init__(self, pool: asyncpg.Pool, *, invoices_shown: int, ttl: float) -> None:
        self.pool = pool
        self.invoices_shown = invoices_shown
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._value: BusinessOverview | None = None
        self._at = 0.0
        self._agreements: store.AgreementCache = {}

    async def get(self, now: datetime) -> BusinessOverview:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.ttl:
                self._value = await business_overview(
                    self.pool,
                    now=now,
                    invoices_shown=self.invoices_shown,
                    agreement_cache=self._agreements,
                )
                self._at = time.monotonic()
            return self._value
