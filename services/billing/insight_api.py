"""Billing's insight endpoints (SPEC §8): the open period's forecast and right-sizing advice.

Reads only (the current agreement, the ledger's counts and service-level counts, the closed
periods); the figures come from the pure `services.billing.insight`.
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
from services.billing.insight import Billed, BilledPeriod, forecast, recommendations
from services.billing.openapi import responses
from shared.contracts.insight import Forecast, Recommendations
from shared.domain.agreement.agreement import Agreement
from shared.domain.commitment import contract_year
from shared.domain.periods import Period, parse_period, period_bounds, period_of
from shared.domain.rating import Reason
from shared.infra.db import Executor
from shared.infra.http import READERS
from shared.ledger.reads import billable_usage, counts_between, counts_for_ranges
from shared.ledger.service_levels import level_counts

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
    """The open period's forecast, or that of `period` (query), under the current agreement.

    **Projection.** Each class's items and units so far are scaled by the period's length over
    the time elapsed (UTC instants, half-up; no scaling in the first hour), then rated as an
    invoice would be.

    **Service levels** (SPEC §11; only when the agreement has them): `service_levels` reports
    each level's counts so far. The projection keeps each level's attainment as it stands (a
    ratio does not grow with volume), so `projected.lines` carry a `service_credit` line for
    every level missed so far, priced on the projected tier's fee.

    **Commitment** (only when the agreement has one): the period's contract year projected to
    its end. `spend_so_far` is the committed spend of the year's closed periods (what is billed
    for each less its service credits); each period of the year not closed yet counts this
    period's projected total less its projected credits (`period_spend`); `projected_true_up`
    is max(0, annual_minimum − projected_spend), what the year's 12th invoice would add.
    """
    period = asked or period_of(now, agreement.timezone)
    if not agreement.in_force_for(period):
        raise _not_in_force(agreement, period)
    start, end = period_bounds(period, agreement.timezone)
    counts = await counts_between(db, agreement.client_id, start, end)
    levels = await level_counts(db, agreement, start, end)
    closed = await _closed_in_year(db, agreement, period)
    return forecast(agreement, period, counts, now, levels, closed)


@router.get(
    "/v1/recommendations/{client_id}",
    summary="Scope vs volume over the invoiced periods, and the cheapest change",
    dependencies=READERS,
    responses=responses(404, 422),
)
async def get_recommendations(agreement: CurrentAgreement, db: Database) -> Recommendations:
    """Over the invoiced periods, each re-rated with the current agreement and its usage as it
    stands: how often scope set the tier, each period's cost in each tier, and the candidate
    changes (a higher `min_items`, a class moved into a lower tier's scope, the other scope
    mode, one tier every period) with their saving, best first. Totals leave service credits
    out.

    **Commitment** (only when the agreement has one): the annual minimum is billed whatever the
    change, so each side of a change costs the compared periods of a contract year at least the
    year's minimum for them — the whole `annual_minimum` for a complete year, its share
    `annual_minimum × n ÷ 12` (half-up) for the n compared periods of a year still running.
    `total_before`, `total_after` and `saving` count each year at that cost, and each option's
    `commitment` lists the years' figures; a saving the minimum eats is said in the description.
    """
    return recommendations(agreement, await _invoiced_history(db, agreement))


async def _closed_in_year(
    db: Executor, agreement: Agreement, period: Period
) -> dict[str, Billed] | None:
    """The closed periods of `period`'s contract year; None without a commitment."""
    if agreement.commitment is None or agreement.effective_from is None:
        return None
    year = contract_year(agreement.effective_from, period)
    keys = [each.key for each in year.periods] if year is not None else []
    return await store.billed_periods(db, agreement.client_id, keys)


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
