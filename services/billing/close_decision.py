"""What closing a period for a client comes to (SPEC §6, §11), decided on data already loaded.
Pure.

`closing.close_for_client` reads (the client's closed periods, its agreement, the period's
counts and service-level counts, the same for the earlier periods `late_ranges` names that
received late items since they were last settled), calls `decide_close`, and writes the `Close`
it returns in one statement.

The invoice's lines follow §6's order: the rating's (tier fee, out of scope, overage, service
credits), one late adjustment per re-rated earlier period, and on a contract year's 12th period
the commitment's true-up, which counts the late adjustments of this very invoice toward the
periods they name and leaves every service credit out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.billing.invoices import build_invoice
from shared.contracts.invoice import Invoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount
from shared.domain.commitment import contract_year, shortfall, spend
from shared.domain.periods import Period, parse_period, period_bounds
from shared.domain.rating import (
    InvoiceLine,
    Rating,
    commitment_true_up_line,
    late_adjustment_line,
    rate,
)
from shared.domain.usage import ClassCount, billable_usage


@dataclass(frozen=True)
class ClosedPeriod:
    """A period already closed for the client, as billing recorded it."""

    period: str
    invoice_id: str | None  # None: closed unbilled (usage, no agreement in force)
    items: int
    billed_total: Decimal | None  # everything billed for it so far (None when unbilled)
    late_items_settled: int  # the late items its billed_total already accounts for
    credits: Decimal = Decimal(0)  # the service credits inside billed_total, as last rated


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
    credits: Decimal


@dataclass(frozen=True)
class PeriodCounts:
    """What the ledger holds for a period: its counts per class and, when the agreement has
    service levels, per level (None otherwise)."""

    counts: list[ClassCount]
    levels: Sequence[LevelCount] | None = None


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
    credits: Decimal = Decimal(0)
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
    ledger: PeriodCounts,
    closed: Mapping[str, ClosedPeriod],
    late_ledger: Mapping[str, PeriodCounts],
    now: datetime,
) -> Close | None:
    """The close of a period not yet closed for `client_id`; None when there is nothing to
    record (no agreement in force and no usage).

    `ledger` is the period's; `late_ledger` holds earlier invoiced periods that may have
    received late items (the ledger read narrows to those): each whose late items exceed what
    was settled is re-rated with `agreement` (service credits too) and gets one
    `late_adjustment` line, in ascending period order.
    """
    counts = ledger.counts
    items = sum(c.items for c in counts if c.classified)
    if agreement is None or not agreement.in_force_for(period):
        if not counts:
            return None  # nothing to bill and nothing to report
        return Close(client_id, period.key, items)

    rerates = []
    adjustments = []
    for key in sorted(late_ledger):
        earlier, counted = closed[key], late_ledger[key]
        late = _late(counted.counts)
        if earlier.billed_total is None or late <= earlier.late_items_settled:
            continue
        rerated = rate(agreement, billable_usage(counted.counts), counted.levels)
        adjustments.append(
            late_adjustment_line(key, rerated.total, earlier.billed_total, agreement.currency)
        )
        rerates.append(Rerate(key, rerated.total, late, rerated.credits))

    rating = rate(agreement, billable_usage(counts), ledger.levels)
    invoice = build_invoice(
        agreement=agreement,
        period=period,
        rating=rating,
        adjustments=adjustments,
        issued_at=now,
        true_up=true_up(agreement, period, rating, closed, rerates),
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
        credits=rating.credits,
        rerates=tuple(rerates),
    )


def true_up(
    agreement: Agreement,
    period: Period,
    rating: Rating,
    closed: Mapping[str, ClosedPeriod],
    rerates: Sequence[Rerate],
) -> InvoiceLine | None:
    """SPEC §11: on the invoice of a contract year's 12th period, the shortfall of the year's
    committed spend against the annual minimum; None otherwise. Each period counts what is
    billed for it without service credits: this invoice's own lines for `period`, what this
    invoice's late adjustments bring an earlier period to, what was billed before for the
    others (invoices, late adjustments and notes), and nothing for one never billed."""
    commitment, effective_from = agreement.commitment, agreement.effective_from
    if commitment is None or effective_from is None:
        return None
    year = contract_year(effective_from, period)
    if year is None or not year.is_last(period):
        return None
    rerated = {r.period: r for r in rerates}
    spends = []
    for each in year.periods:
        if each == period:
            spends.append(spend(rating.total, rating.credits))
        elif (now_billed := rerated.get(each.key)) is not None:
            spends.append(spend(now_billed.billed_total, now_billed.credits))
        elif (before := closed.get(each.key)) is not None and before.billed_total is not None:
            spends.append(spend(before.billed_total, before.credits))
    missing = shortfall(commitment.annual_minimum, spends, agreement.currency)
    if missing is None:
        return None
    return commitment_true_up_line(year.label, missing, agreement.currency)
