"""The client page's reads (I/O): one client's agreement, a period's counts (per class, and per
service level when the agreement has them), its closed periods with what was billed for each (for
a commitment), invoices and notes, read from the ledger and billing's tables, then laid out by the
pure `client_view.client_overview`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.console import store
from services.console.client_view import client_overview
from services.console.documents import ClientOverview
from shared.contracts.invoice import TierChoice
from shared.domain.periods import Period, period_bounds, period_of
from shared.ledger.reads import closed_periods, counts_between
from shared.ledger.service_levels import level_counts


@dataclass(frozen=True)
class ClientReads:
    """What `GET /api/client/overview` reads (set on the app by the lifespan)."""

    pool: asyncpg.Pool
    #: How many of the client's latest invoices (and notes) the page shows.
    invoices_shown: int

    async def overview(
        self, client_id: str, period: Period | None, *, now: datetime
    ) -> ClientOverview:
        """`period` (None: the one open at `now` in the client's timezone) as the client page
        shows it."""
        async with self.pool.acquire() as conn:
            agreement = await store.current_agreement(conn, client_id)
            tz = agreement.timezone if agreement is not None else "UTC"
            open_period = period_of(now, tz)
            shown = period or open_period
            start, end = period_bounds(shown, tz)
            counts = await counts_between(conn, client_id, start, end)
            levels = None
            if agreement is not None and agreement.in_force_for(shown):
                levels = await level_counts(conn, agreement, start, end)
            billed = None
            if agreement is not None and agreement.commitment is not None:
                billed = (await store.billed_periods(conn, [client_id]))[client_id]
            closed = await closed_periods(conn, [client_id])
            invoices = await store.client_invoices(conn, client_id, self.invoices_shown)
            notes = await store.client_notes(conn, client_id, self.invoices_shown)
        return client_overview(
            client_id=client_id,
            agreement=agreement,
            period=shown,
            open_period=open_period,
            counts=counts,
            closed={
                key: TierChoice.billed(row.tier_name, row.tier_reason)
                for (_, key), row in closed.items()
            },
            invoices=invoices,
            notes=notes,
            levels=levels,
            billed=billed,
        )
