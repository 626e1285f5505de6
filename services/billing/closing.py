"""Closing a period for a client (SPEC §6), in one transaction under the client's close lock:
read what the close needs (a few set-based reads), decide (`close_decision`, pure), write it in
one statement. Metering for other clients goes on meanwhile (shared/ledger/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.billing import store
from services.billing.close_decision import ClosedPeriod, decide_close, late_ranges
from services.billing.noting import issue_due_notes
from shared.contracts.invoice import Invoice
from shared.domain.periods import Period, period_bounds
from shared.infra.db import Connection
from shared.ledger.locks import lock_for_close
from shared.ledger.reads import counts_between, late_period_counts


@dataclass(frozen=True)
class CloseOutcome:
    client_id: str
    invoice: Invoice | None = None
    unbilled_items: int | None = None
    newly_closed: bool = False


async def close_for_client(
    conn: Connection, *, client_id: str, period: Period, now: datetime
) -> CloseOutcome:
    async with conn.transaction():
        # First: every read below sees each of this client's items either counted or, once
        # this commits, flagged late; one close per client at a time.
        await lock_for_close(conn, client_id)
        # Notes the client's reclassifications owe come first: the close sees what they billed.
        await issue_due_notes(conn, client_id, now)
        closed = await store.closed_periods_for_close(conn, client_id)
        if (done := closed.get(period.key)) is not None:
            return await _already_closed(conn, client_id, done)

        agreement = await store.current_agreement(conn, client_id)
        tz = agreement.timezone if agreement is not None else "UTC"
        counts = await counts_between(conn, client_id, *period_bounds(period, tz))
        late_counts = {}
        if agreement is not None and agreement.in_force_for(period):
            ranges = [(r.period, r.start, r.end, r.settled) for r in late_ranges(closed, tz)]
            late_counts = await late_period_counts(conn, client_id, ranges)

        close = decide_close(
            client_id=client_id,
            period=period,
            agreement=agreement,
            counts=counts,
            closed=closed,
            late_counts=late_counts,
            now=now,
        )
        if close is None:
            return CloseOutcome(client_id)  # nothing to bill and nothing to report
        await store.record_close(conn, close, now)
        if close.invoice is None:
            return CloseOutcome(client_id, unbilled_items=close.items, newly_closed=True)
        return CloseOutcome(client_id, invoice=close.invoice, newly_closed=True)


async def _already_closed(conn: Connection, client_id: str, done: ClosedPeriod) -> CloseOutcome:
    if done.invoice_id is None:
        return CloseOutcome(client_id, unbilled_items=done.items)
    return CloseOutcome(client_id, invoice=await store.invoice(conn, done.invoice_id))
