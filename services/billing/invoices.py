"""The invoice of SPEC §7 and its CloudEvent envelope. Pure: builds the typed documents of
`shared.contracts.invoice` from a rating."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Final

from shared.contracts.invoice import (
    BilledClass,
    Invoice,
    InvoiceIssued,
    InvoiceUsage,
    ServiceLevelReport,
    TierChoice,
    invoice_line,
)
from shared.domain.agreement.agreement import Agreement
from shared.domain.money import EXACT_PRECISION, round_money
from shared.domain.periods import Period, period_bounds
from shared.domain.rating import InvoiceLine, Rating

#: Kafka headers of an invoice event: CloudEvents structured mode (SPEC §7). No `ce_*` header:
#: the CloudEvents SDK's `from_kafka_event` reads one as binary mode and fails on the envelope.
CLOUDEVENT_HEADERS: Final = (("content-type", "application/cloudevents+json; charset=utf-8"),)
FIRST_REVISION: Final = 1


def invoice_id(client_id: str, period: Period, revision: int = FIRST_REVISION) -> str:
    return f"{client_id}-{period.key}-{revision}"


def build_invoice(
    *,
    agreement: Agreement,
    period: Period,
    rating: Rating,
    adjustments: Sequence[InvoiceLine],
    issued_at: datetime,
    true_up: InvoiceLine | None = None,
) -> Invoice:
    """The period's invoice: the rating's lines, then `adjustments` (late adjustments), then the
    commitment's `true_up` if any; the total is the sum of the line amounts. `issued_at` is kept
    to the whole second."""
    assert agreement.version is not None, "only a stored agreement rates a period"
    start, end = period_bounds(period, agreement.timezone)
    currency = agreement.currency
    lines = [*rating.lines, *adjustments, *([] if true_up is None else [true_up])]
    with localcontext(prec=EXACT_PRECISION):
        total = round_money(sum((line.amount for line in lines), Decimal(0)), currency)
    decision = rating.decision
    return Invoice(
        invoice_id=invoice_id(agreement.client_id, period),
        client_id=agreement.client_id,
        period=period.key,
        period_start=start,
        period_end=end,
        currency=currency,
        agreement_version=agreement.version,
        tier=TierChoice.of(decision),
        usage=InvoiceUsage(
            items=sum(c.items for c in decision.classes),
            weighted_units=decision.weighted_units,
            by_class=tuple(
                BilledClass(
                    service_line=c.service_class.service_line,
                    complexity=c.service_class.complexity,
                    items=c.items,
                    units=c.units,
                    weighted_units=c.weighted_units,
                )
                for c in decision.classes
            ),
        ),
        lines=tuple(invoice_line(line, currency) for line in lines),
        total=total,
        issued_at=issued_at.replace(microsecond=0),
        service_levels=(
            None
            if rating.service_levels is None
            else tuple(ServiceLevelReport.of(result) for result in rating.service_levels)
        ),
    )


def cloudevent(invoice: Invoice) -> InvoiceIssued:
    return InvoiceIssued.of(invoice)
