"""Closing a period for a client (SPEC §6): rate it once, settle late items of earlier periods,
record it all in one transaction that holds metering still, then publish from the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from asyncpg import Record

from services.billing import store
from services.billing.invoices import build_invoice
from shared.contracts.invoice import Invoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, parse_period, period_bounds
from shared.domain.rating import InvoiceLine, late_adjustment_line, rate
from shared.infra.db import Connection
from shared.ledger.reads import LOCK_FOR_CLOSE, billable_usage, counts_between


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
        # One close per client at a time; metering waits while the period's counts are read.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('close:' || $1))", client_id)
        await conn.execute(LOCK_FOR_CLOSE)
        existing = await store.closed_period(conn, client_id, period.key)
        if existing is not None:
            return await _already_closed(conn, existing)

        agreement = await store.current_agreement(conn, client_id)
        tz = agreement.timezone if agreement is not None else "UTC"
        start, end = period_bounds(period, tz)
        counts = await counts_between(conn, client_id, start, end)
        items = sum(c.items for c in counts if c.classified)
        if agreement is None or not agreement.in_force_for(period):
            if not counts:
                return CloseOutcome(client_id)  # nothing to bill and nothing to report
            await store.record_close(conn, client_id=client_id, period=period.key, items=items)
            return CloseOutcome(client_id, unbilled_items=items, newly_closed=True)

        rating = rate(agreement, billable_usage(counts))
        adjustments = await _settle_late_items(conn, agreement)
        invoice = build_invoice(
            agreement=agreement,
            period=period,
            rating=rating,
            adjustments=adjustments,
            issued_at=now,
        )
        await store.record_close(
            conn,
            client_id=client_id,
            period=period.key,
            items=items,
            invoice_id=invoice.invoice_id,
            agreement_version=agreement.version,
            tier_name=rating.decision.tier.name,
            tier_reason=rating.decision.reason,
            billed_total=rating.total,
            late_items_settled=sum(c.late_items for c in counts if c.classified),
        )
        await store.insert_invoice(conn, invoice, now)
        return CloseOutcome(client_id, invoice=invoice, newly_closed=True)


async def _already_closed(conn: Connection, row: Record) -> CloseOutcome:
    if row["invoice_id"] is None:
        return CloseOutcome(row["client_id"], unbilled_items=int(row["items"]))
    return CloseOutcome(row["client_id"], invoice=await store.invoice(conn, row["invoice_id"]))


async def _settle_late_items(conn: Connection, agreement: Agreement) -> list[InvoiceLine]:
    """Re-rate every invoiced period that received late items since it was last settled."""
    lines = []
    for row in await store.invoiced_periods(conn, agreement.client_id):
        earlier = parse_period(row["period"])
        start, end = period_bounds(earlier, agreement.timezone)
        counts = await counts_between(conn, agreement.client_id, start, end)
        late = sum(c.late_items for c in counts if c.classified)
        if late <= int(row["late_items_settled"]):
            continue
        rerated = rate(agreement, billable_usage(counts))
        already_billed = Decimal(row["billed_total"])
        lines.append(
            late_adjustment_line(earlier.key, rerated.total, already_billed, agreement.currency)
        )
        await store.record_rerate(
            conn,
            client_id=agreement.client_id,
            period=earlier.key,
            billed_total=rerated.total,
            late_items_settled=late,
        )
    return lines
