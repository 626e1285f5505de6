"""GET /v1/usage/{client_id}: the running counts of SPEC §5, and the tier they land in now."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from shared.agreements import Agreement, ServiceClass
from shared.http import AdminCaller
from shared.kafka import CompactedView
from shared.ledger import ClassCount, closed_periods, counts_between
from shared.money import format_decimal
from shared.periods import Period, parse_period, period_bounds, period_of
from shared.rating import ClassUsage, decide_tier, weighted_units


def usage_report(
    *,
    client_id: str,
    period: Period,
    agreement: Agreement | None,
    counts: list[ClassCount],
    closed_tier: dict[str, str] | None,
    closed: bool,
) -> dict[str, Any]:
    """The usage document: pure, from the counts and the agreement."""
    billable = sorted(
        (c for c in counts if c.classified),
        key=lambda c: ServiceClass(c.service_line, c.complexity).sort_key,  # type: ignore[arg-type]
    )
    in_force = agreement is not None and agreement.in_force_for(period)
    tier: dict[str, str] | None = None
    total_weight = Decimal(0)
    by_class = []
    for c in billable:
        service_class = ServiceClass(c.service_line, c.complexity)  # type: ignore[arg-type]
        weight = (
            weighted_units(agreement.pricing, service_class, c.items, c.units)
            if in_force and agreement is not None
            else Decimal(0)
        )
        total_weight += weight
        by_class.append({
            "service_line": c.service_line, "complexity": c.complexity, "items": c.items,
            "units": c.units, "handling_seconds": c.handling_seconds,
            "weighted_units": format_decimal(weight),
        })
    if closed:
        tier = closed_tier
    elif in_force and agreement is not None:
        decision = decide_tier(agreement.pricing, [
            ClassUsage(ServiceClass(c.service_line, c.complexity), c.items, c.units,  # type: ignore[arg-type]
                       c.handling_seconds)
            for c in billable
        ])
        tier = {"name": decision.tier.name, "reason": decision.reason}
    return {
        "client_id": client_id,
        "period": period.key,
        "status": "closed" if closed else "open",
        "items": sum(c.items for c in billable),
        "units": sum(c.units for c in billable),
        "weighted_units": format_decimal(total_weight),
        "late_items": sum(c.late_items for c in billable),
        "unclassified_items": sum(c.items for c in counts if not c.classified),
        "tier": tier,
        "by_class": by_class,
    }


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
                {"detail": f"period: {error}", "errors": [{"loc": ["query", "period"], "msg": str(error)}]},
                status_code=422,
            )
        start, end = period_bounds(wanted, tz)
        counts = await counts_between(pool, client_id, start, end)
        closed = (await closed_periods(pool, [client_id])).get((client_id, wanted.key))
        closed_tier = (
            {"name": closed.tier_name, "reason": closed.tier_reason}
            if closed is not None and closed.tier_name and closed.tier_reason
            else None
        )
        return JSONResponse(usage_report(
            client_id=client_id, period=wanted, agreement=agreement, counts=counts,
            closed_tier=closed_tier, closed=closed is not None,
        ))

    return router
