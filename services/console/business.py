"""The business half of the page (I/O): every client's open period, the review queues and the
recent invoices.

Each client's open period is the calendar month containing now in its agreement's timezone
(UTC without one); its counts come from the ledger exactly as metering's usage API reads them.
The clients shown with a full card also get their service levels (SPEC §11: counts per level, as
billing and metering read them) and their commitment's contract year (billing's closed periods).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

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
from shared.domain.attainment import LevelCount
from shared.domain.periods import parse_period, period_bounds, period_of
from shared.infra.db import Executor
from shared.ledger.reads import clients_with_usage_between, closed_periods, counts_for_ranges
from shared.ledger.service_levels import level_counts

#: The page shows at most this many clients (the busiest by projected weighted units).
MAX_CLIENTS = 100
#: A client's service levels are measured again at most this often: each measure reads the
#: client's items of the period (not the daily counts), and the page polls every few seconds.
LEVELS_TTL: Final = timedelta(seconds=30)

#: Each client's last service-level counts: client → ((period, agreement version), read at, counts).
LevelCache = dict[str, tuple[tuple[str, int | None], datetime, list[LevelCount]]]


async def business_overview(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    invoices_shown: int,
    agreement_cache: store.AgreementCache | None = None,
    level_cache: LevelCache | None = None,
) -> BusinessOverview:
    """A handful of set-based reads whatever the number of clients (agreements, clients with
    usage, closed periods, every client's open-period and last-closed-period counts in one
    query, invoices), then the cards in pure code: every client is ranked by projected weighted
    units, and only the MAX_CLIENTS busiest get a full card (tier decisions and the tier
    ladder; for those with service levels, their counts, read at most every LEVELS_TTL per
    client through `level_cache`; for those with a commitment, what was billed for their closed
    periods, in one query); the review queues are every client's unclassified items in those
    two periods."""
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
    shown = {client: open_periods[client] for client in ranked[:MAX_CLIENTS]}
    committed = [c for c, o in shown.items() if o.agreement and o.agreement.commitment]
    async with pool.acquire() as conn:
        levels = await _level_counts(conn, shown, now, {} if level_cache is None else level_cache)
        billed = await store.billed_periods(conn, committed) if committed else {}
    cards = [
        client_usage(
            client_id=client,
            open_period=open_period,
            now=now,
            closed=(client, open_period.period.key) in closed,
            levels=levels.get(client),
            billed=billed.get(client),
        )
        for client, open_period in shown.items()
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


async def _level_counts(
    conn: Executor, shown: Mapping[str, OpenPeriod], now: datetime, cache: LevelCache
) -> dict[str, list[LevelCount]]:
    """The service-level counts of the open period of each shown client whose agreement in force
    has service levels: from `cache` when read less than LEVELS_TTL ago for the same period
    and agreement version, else read (and kept in `cache`)."""
    found = {}
    for client, open_period in shown.items():
        agreement = open_period.in_force
        if agreement is None or agreement.service_levels is None:
            continue
        key = (open_period.period.key, agreement.version)
        kept = cache.get(client)
        if kept is not None and kept[0] == key and now - kept[1] < LEVELS_TTL:
            found[client] = kept[2]
            continue
        counts = await level_counts(conn, agreement, open_period.start, open_period.end)
        if counts is not None:
            cache[client] = (key, now, counts)
            found[client] = counts
    for client in [c for c in cache if c not in found]:
        del cache[client]  # no longer shown, or no longer with service levels
    return found


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
        self._levels: LevelCache = {}

    async def get(self, now: datetime) -> BusinessOverview:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.ttl:
                self._value = await business_overview(
                    self.pool,
                    now=now,
                    invoices_shown=self.invoices_shown,
                    agreement_cache=self._agreements,
                    level_cache=self._levels,
                )
                self._at = time.monotonic()
            return self._value
