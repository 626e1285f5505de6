"""Billing's insight endpoints (SPEC §8): the open period's forecast and right-sizing advice.

Reads only (the current agreement, the ledger's counts, the invoiced periods); the figures come
from the pure `services.billing.insight`.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.billing import store
from services.billing.deps import (
    BillingRoute,
    CurrentAgreement,
    Database,
    Now,
    PathClientId,
    QueryPeriod,
    Refusal,
    not_found,
    share_methods,
)
from services.billing.insight import BilledPeriod, forecast, recommendations
from services.billing.openapi import responses
from shared.contracts.insight import Forecast, Recommendations
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, parse_period, period_bounds, period_of
from shared.domain.rating import Reason
from shared.infra.db import Executor
from shared.infra.http import READERS
from shared.ledger.reads import billable_usage, counts_between, counts_for_ranges

#: Reads of one client's figures: an admin key or that client's own key (SPEC §2).
router = APIRouter(route_class=BillingRoute, tags=["insight"])


@router.get(
    "/v1/forecast/{client_id}",
    summary="The period's projected W, tier and total",
    dependencies=READERS,
    responses=responses(404, 422),
)
async def get_forecast(
    _client_id: PathClientId,
    asked: QueryPeriod,
    agreement: CurrentAgreement,
    db: Database,
    now: Now,
) -> Forecast:
    """The open period's forecast, or that of `period` (query)."""
    period = asked or period_of(now, agreement.timezone)
    if not agreement.in_force_for(period):
        raise _not_in_force(agreement, period)
    start, end = period_bounds(period, agreement.timezone)
    counts = await counts_between(db, agreement.client_id, start, end)
    return forecast(agreement, period, counts, now)


@router.get(
    "/v1/recommendations/{client_id}",
    summary="Scope vs volume over the invoiced periods, and the cheapest change",
    dependencies=READERS,
    responses=responses(404, 422),
)
async def get_recommendations(agreement: CurrentAgreement, db: Database) -> Recommendations:
    return recommendations(agreement, await _invoiced_history(db, agreement))


async def _invoiced_history(db: Executor, agreement: Agreement) -> list[BilledPeriod]:
    """Each invoiced period of the client: its usage as it stands now and its billed tier."""
    client_id = agreement.client_id
    rows = [r for r in await store.closed_periods_of(db, client_id) if r["invoice_id"]]
    periods = {r["period"]: parse_period(r["period"]) for r in rows}
    ranges = [
        (client_id, key, *period_bounds(period, agreement.timezone))
        for key, period in periods.items()
    ]
    counts = await counts_for_ranges(db, ranges) if ranges else {}
    return [
        (
            periods[r["period"]],
            billable_usage(counts[(client_id, r["period"])]),
            str(r["tier_name"]),
            _reason(r["tier_reason"]),
        )
        for r in rows
    ]


def _reason(stored: object) -> Reason:
    if stored == "volume" or stored == "scope":
        return stored
    raise ValueError(f"not a tier reason: {stored!r}")


def _not_in_force(agreement: Agreement, period: Period) -> Refusal:
    detail = (
        f"the agreement of {agreement.client_id} takes effect on {agreement.effective_from}; "
        f"{period.key} is not billed under it"
    )
    return not_found(detail)


share_methods(router)
