"""The invoice of SPEC §7 and its CloudEvent envelope. Pure: builds plain JSON-ready data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from shared.domain.agreement.agreement import Agreement
from shared.domain.money import format_decimal, format_money
from shared.domain.periods import Period, period_bounds
from shared.domain.rating import InvoiceLine, Rating

EVENT_TYPE: Final = "bpo.invoice.issued"
#: Kafka headers of an invoice event: CloudEvents structured mode (SPEC §7). No `ce_*` header:
#: the CloudEvents SDK's `from_kafka_event` reads one as binary mode and fails on the envelope.
CLOUDEVENT_HEADERS: Final = (("content-type", "application/cloudevents+json; charset=utf-8"),)
EVENT_SOURCE: Final = "/tierline/billing"
FIRST_REVISION: Final = 1


def invoice_id(client_id: str, period: Period, revision: int = FIRST_REVISION) -> str:
    return f"{client_id}-{period.key}-{revision}"


def utc_timestamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_invoice(
    *,
    agreement: Agreement,
    period: Period,
    rating: Rating,
    adjustments: Sequence[InvoiceLine],
    issued_at: datetime,
) -> dict[str, Any]:
    start, end = period_bounds(period, agreement.timezone)
    lines = [*rating.lines, *adjustments]
    total = sum((line.amount for line in lines), Decimal(0))
    assert agreement.version is not None, "only a stored agreement rates a period"
    return {
        "invoice_id": invoice_id(agreement.client_id, period),
        "client_id": agreement.client_id,
        "period": period.key,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "currency": agreement.currency,
        "agreement_version": agreement.version,
        "tier": {"name": rating.decision.tier.name, "reason": rating.decision.reason},
        "usage": {
            "items": sum(c.items for c in rating.decision.classes),
            "weighted_units": format_decimal(rating.decision.weighted_units),
            "by_class": [
                {
                    "service_line": c.service_class.service_line,
                    "complexity": c.service_class.complexity,
                    "items": c.items,
                    "units": c.units,
                    "weighted_units": format_decimal(c.weighted_units),
                }
                for c in rating.decision.classes
            ],
        },
        "lines": [line.to_wire(agreement.currency) for line in lines],
        "total": format_money(total, agreement.currency),
        "issued_at": utc_timestamp(issued_at),
    }


def cloudevent(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": EVENT_SOURCE,
        "id": invoice["invoice_id"],
        "subject": invoice["client_id"],
        "time": invoice["issued_at"],
        "datacontenttype": "application/json",
        "data": invoice,
    }
