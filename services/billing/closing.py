"""Closing a period for a client (SPEC §6, §11), in one transaction under the client's close
lock: read what the close needs (a few set-based reads), decide (`close_decision`, pure), write it
in one statement. Metering for other clients goes on meanwhile (shared/ledger/README.md).

Closing a contract year's 12th period first closes that year's earlier periods still open for the
client, in order, in the same transaction (SPEC §13 "Commitment"): the true-up then counts each of
them, none as 0 by omission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.billing import store
from services.billing.close_decision import (
    ClosedPeriod,
    PeriodCounts,
    decide_close,
    late_ranges,
)
from services.billing.noting import issue_due_notes
from shared.contracts.invoice import Invoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.commitment import contract_year
from shared.domain.periods import Period, parse_period, period_bounds
from shared.infra.db import Connection
from shared.ledger.reads import counts_between, late_period_counts
from shared.ledger.service_levels import level_counts


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
        # First the client's close lock (one close per client at a time), so every read sees
        # each of this client's items either counted or, once this commits, flagged late; the
        # first reads come back in the same round trip.
        start = await store.lock_and_read_for_close(conn, client_id)
        closed, agreement = start.closed, start.agreement
        if start.notes_owed:
            # Notes the client's reclassifications owe come first: the close sees what they
            # billed.
            await issue_due_notes(conn, client_id, now)
            closed = await store.closed_periods_for_close(conn, client_id)
        if (done := closed.get(period.key)) is not None:
            return await _already_closed(conn, client_id, done)
        for earlier in _open_earlier_in_year(agreement, period, closed):
            await _close(conn, client_id, earlier, agreement, now, closed)
            closed = await store.closed_periods_for_close(conn, client_id)  # with `earlier`
        return await _close(conn, client_id, period, agreement, now, closed)


def _open_earlier_in_year(
    agreement: Agreement | None, period: Period, closed: dict[str, ClosedPeriod]
) -> list[Period]:
    """When `period` is a contract year's 12th, the year's earlier periods not yet closed."""
    if agreement is None or agreement.commitment is None or agreement.effective_from is None:
        return []
    year = contract_year(agreement.effective_from, period)
    if year is None or not year.is_last(period):
        return []
    return [p for p in year.periods if p < period and p.key not in closed]


async def _close(
    conn: Connection,
    client_id: str,
    period: Period,
    agreement: Agreement | None,
    now: datetime,
    closed: dict[str, ClosedPeriod],
) -> CloseOutcome:
    """Read, decide and write one period's close, in the caller's locked transaction, which has
    read the client's `closed` periods."""
    tz = agreement.timezone if agreement is not None else "UTC"
    ledger = await _period_counts(conn, client_id, agreement, period, tz)
    late_ledger = {}
    if agreement is not None and agreement.in_force_for(period):
        ranges = [(r.period, r.start, r.end, r.settled) for r in late_ranges(closed, tz)]
        for key, counts in (await late_period_counts(conn, client_id, ranges)).items():
            bounds = period_bounds(parse_period(key), tz)
            late_ledger[key] = PeriodCounts(counts, await level_counts(conn, agreement, *bounds))

    close = decide_close(
        client_id=client_id,
        period=period,
        agreement=agreement,
        ledger=ledger,
        closed=closed,
        late_ledger=late_ledger,
        now=now,
    )
    if close is None:
        return CloseOutcome(client_id)  # nothing to bill and nothing to report
    await store.record_close(conn, close, now)
    if close.invoice is None:
        return CloseOutcome(client_id, unbilled_items=close.items, newly_closed=True)
    return CloseOutcome(client_id, invoice=close.invoice, newly_closed=True)


async def _period_counts(
    conn: Connection, client_id: str, agreement: Agreement | None, period: Period, tz: str
) -> PeriodCounts:
    bounds = period_bounds(period, tz)
    counts = await counts_between(conn, client_id, *bounds)
    if agreement is None or not agreement.in_force_for(period):
        return PeriodCounts(counts)
    return PeriodCounts(counts, await level_counts(conn, agreement, *bounds))


async def _already_closed(conn: Connection, client_id: str, done: ClosedPeriod) -> CloseOutcome:
    if done.invoice_id is None:
        return CloseOutcome(client_id, unbilled_items=done.items)
    return CloseOutcome(client_id, invoice=await store.invoice(conn, done.invoice_id))
