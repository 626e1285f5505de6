"""What closing a period for a client comes to (SPEC §6), decided on data already loaded. Pure.

`closing.close_for_client` reads (the client's closed periods, its agreement, the period's
counts, the counts of the earlier periods `late_ranges` names that received late items since they
were last settled), calls `decide_close`, and writes the `Close` it returns in one statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.billing.invoices import build_invoice
from shared.contracts.invoice import Invoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, parse_period, period_bounds
from shared.domain.rating import late_adjustment_line, rate
from shared.domain.usage import ClassCount, billable_usage


@dataclass(frozen=True)
class ClosedPeriod:
    """A period already closed for the client, as billing recorded it."""

    period: str
    invoice_id: str | None  # None: closed unbilled (usage, no agreement in force)
    items: int
    billed_total: Decimal | None  # everything billed for it so far (None when unbilled)
    late_items_settled: int  # the late items its billed_total already accounts for


@dataclass(frozen=True)
class LateRange:
    """An invoiced period to look at for late items: its bounds in the current agreement's zone,
    and how many late items were already settled."""

    period: str
    start: datetime
    end: datetime
    settled: int


@dataclass(frozen=True)
class Rerate:
    """An earlier period re-rated with its late items: what is now billed for it."""

    period: str
    billed_total: Decimal
    late_items_settled: int


@dataclass(frozen=True)
class Close:
    """Everything a close records: the closed period, its invoice (None: unbilled), and the
    earlier periods it re-rated."""

    client_id: str
    period: str
    items: int
    invoice: Invoice | None = None
    agreement_version: int | None = None
    tier_name: str | None = None
    tier_reason: str | None = None
    billed_total: Decimal | None = None
    late_items_settled: int = 0
    rerates: tuple[Rerate, ...] = ()


def _late(counts: list[ClassCount]) -> int:
    return sum(c.late_items for c in counts if c.classified)


def late_ranges(closed: Mapping[str, ClosedPeriod], timezone: str) -> list[LateRange]:
    """The invoiced periods whose late items a close looks for, in `timezone`."""
    ranges = []
    for row in sorted(closed.values(), key=lambda r: r.period):
        if row.invoice_id is not None:
            start, end = period_bounds(parse_period(row.period), timezone)
            ranges.append(LateRange(row.period, start, end, row.late_items_settled))
    return ranges


def decide_close(
    *,
    client_id: str,
    period: Period,
    agreement: Agreement | None,
    counts: list[ClassCount],
    closed: Mapping[str, ClosedPeriod],
    late_counts: Mapping[str, list[ClassCount]],
    now: datetime,
) -> Close | None:
    """The close of a period not yet closed for `client_id`; None when there is nothing to
    record (no agreement in force and no usage).

    `counts` are the period's counts; `late_counts` the counts of earlier invoiced periods that
    may have received late items (the ledger read narrows to those): each whose late items
    exceed what was settled is re-rated with `agreement` and gets one `late_adjustment` line,
    in ascending period order.
    """
    items = sum(c.items for c in counts if c.classified)
    if agreement is None or not agreement.in_force_for(period):
        if not counts:
            return None  # nothing to bill and nothing to report
        return Close(client_id, period.key, items)

    rerates = []
    adjustments = []
    for key in sorted(late_counts):
        earlier, counted = closed[key], late_counts[key]
        late = _late(counted)
        if earlier.billed_total is None or late <= earlier.late_items_settled:
            continue
        rerated = rate(agreement, billable_usage(counted))
        adjustments.append(
            late_adjustment_line(key, rerated.total, earlier.billed_total, agreement.currency)
        )
        rerates.append(Rerate(key, rerated.total, late))

    rating = rate(agreement, billable_usage(counts))
    invoice = build_invoice(
        agreement=agreement, period=period, rating=rating, adjustments=adjustments, issued_at=now
    )
    return Close(
        client_id,
        period.key,
        items,
        invoice=invoice,
        agreement_version=agreement.version,
        tier_name=rating.decision.tier.name,
        tier_reason=rating.decision.reason,
        billed_total=rating.total,
        late_items_settled=_late(counts),
        rerates=tuple(rerates),
    )
