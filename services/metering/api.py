"""GET /v1/usage/{client_id}: the running counts of SPEC §5, and the tier they land in now."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from services.metering.usage import usage_report
from shared.agreements import Agreement
from shared.http import AdminCaller
from shared.kafka import CompactedView
from shared.ledger import closed_periods, counts_between
from shared.periods import parse_period, period_bounds, period_of


def build_router(pool: asyncpg.Pool, agreements: CompactedView[Agreement]) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/usage/{client_id}", summary="Running counts for a client and period")
    async def usage(client_id: str, _: AdminCaller, period: str | None = None) -> Response:
        agreement = agreements.get(client_id)
        tz = agreement.timezone if agreement is not None else "UTC"
        try:
            wanted = parse_period(period) if period else period_of(datetime.now(UTC), tz)
        except ValueError as error:
            return JSONResponse(
                {
                    "detail": f"period: {error}",
                    "errors": [{"loc": ["query", "period"], "msg": str(error)}],
                },
                status_code=422,
            )
        start, end = period_bounds(wanted, tz)
        counts = await counts_between(pool, client_id, start, end)
        closed = (await closed_periods(pool, [client_id])).get((client_id, wanted.key))
        billed_tier = (
            {"name": closed.tier_name, "reason": closed.tier_reason}
            if closed is not None and closed.tier_name and closed.tier_reason
            else None
        )
        return JSONResponse(
            usage_report(
                client_id=client_id,
                period=wanted,
                agreement=agreement,
                counts=counts,
                billed_tier=billed_tier,
                closed=closed is not None,
            )
        )

    return router
