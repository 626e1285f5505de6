"""Billing's insight endpoints (SPEC §8): the open period's forecast and right-sizing advice.

Reads only (the current agreement, the ledger's counts, the invoiced periods); the figures come
from the pure `services.billing.insight`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from services.billing import store
from services.billing.insight import BilledPeriod, forecast, recommendations
from services.billing.openapi import (
    CLIENT_ID_SCHEMA,
    FORECAST_SCHEMA,
    PERIOD_SCHEMA,
    RECOMMENDATIONS_SCHEMA,
    bad_client_id,
    period_or_error,
    responses,
)
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, parse_period, period_bounds, period_of
from shared.infra.db import Executor
from shared.infra.http import AdminCaller
from shared.ledger.reads import billable_usage, counts_between, counts_for_ranges

ClientIdPath = Annotated[str, Path(json_schema_extra=CLIENT_ID_SCHEMA)]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _no_agreement(client_id: str) -> Response:
    return JSONResponse({"detail": f"no agreement for {client_id}"}, status_code=404)


def build_insight_router(pool: Executor, *, clock: Callable[[], datetime] = _utcnow) -> APIRouter:
    """`GET /v1/forecast/{client_id}` and `GET /v1/recommendations/{client_id}` (admin key).

    `clock` gives "now" (tests pin it)."""
    router = APIRouter(tags=["insight"])

    @router.get(
        "/v1/forecast/{client_id}",
        summary="The period's projected W, tier and total",
        responses=responses(FORECAST_SCHEMA, 404, 422),
    )
    async def get_forecast(
        client_id: ClientIdPath,
        _: AdminCaller,
        period: Annotated[str | None, Query(json_schema_extra=PERIOD_SCHEMA)] = None,
    ) -> Response:
        if bad := bad_client_id(client_id, "path"):
            return bad
        asked = period_or_error(period, "query") if period is not None else None
        if isinstance(asked, Response):
            return asked
        agreement = await store.current_agreement(pool, client_id)
        if agreement is None:
            return _no_agreement(client_id)
        now = clock()
        wanted = asked or period_of(now, agreement.timezone)
        if not agreement.in_force_for(wanted):
            return _not_in_force(agreement, wanted)
        start, end = period_bounds(wanted, agreement.timezone)
        counts = await counts_between(pool, client_id, start, end)
        return JSONResponse(forecast(agreement, wanted, counts, now))

    @router.get(
        "/v1/recommendations/{client_id}",
        summary="Scope vs volume over the invoiced periods, and the cheapest change",
        responses=responses(RECOMMENDATIONS_SCHEMA, 404, 422),
    )
    async def get_recommendations(client_id: ClientIdPath, _: AdminCaller) -> Response:
        if bad := bad_client_id(client_id, "path"):
            return bad
        agreement = await store.current_agreement(pool, client_id)
        if agreement is None:
            return _no_agreement(client_id)
        rows = [r for r in await store.closed_periods_of(pool, client_id) if r["invoice_id"]]
        periods = {r["period"]: parse_period(r["period"]) for r in rows}
        ranges = [
            (client_id, key, *period_bounds(period, agreement.timezone))
            for key, period in periods.items()
        ]
        counts = await counts_for_ranges(pool, ranges) if ranges else {}
        history: list[BilledPeriod] = [
            (
                periods[r["period"]],
                billable_usage(counts[(client_id, r["period"])]),
                str(r["tier_name"]),
                str(r["tier_reason"]),
            )
            for r in rows
        ]
        return JSONResponse(recommendations(agreement, history))

    return router


def _not_in_force(agreement: Agreement, period: Period) -> Response:
    detail = (
        f"the agreement of {agreement.client_id} takes effect on {agreement.effective_from}; "
        f"{period.key} is not billed under it"
    )
    return JSONResponse({"detail": detail}, status_code=404)
