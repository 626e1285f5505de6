"""Small helpers more than one test file uses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from services.console.usage import client_usage, projected_weighted_units
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, period_bounds
from shared.ledger.reads import ClassCount


def console_card(
    client_id: str,
    agreement: Agreement | None,
    period: Period,
    now: datetime,
    counts: list[ClassCount],
) -> tuple[dict[str, Any], Decimal]:
    """The console's usage card of a client in an open period at `now`, and the figure that
    ranks the card on the overview (`projected_weighted_units`)."""
    start, end = period_bounds(period, agreement.timezone if agreement else "UTC")
    moment: dict[str, Any] = {"agreement": agreement, "period": period, "start": start, "end": end}
    moment |= {"now": now, "counts": counts}
    card = client_usage(client_id=client_id, closed=False, **moment)
    return card, projected_weighted_units(**moment)
