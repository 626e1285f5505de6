"""GET /v1/usage/{client_id}: the running counts of SPEC §5, and the tier they land in now; GET
/v1/service-levels/{client_id}: a period's service levels, computed now (SPEC §11, §13).

The routes read the ledger and the agreements through `Ledger`, set on the app by the lifespan
once the pool exists. They take an admin key or the client's own key (SPEC §2), checked first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

import asyncpg
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from shared.contracts.invoice import TierChoice
from shared.contracts.usage import (
    ServiceLevelsReport,
    UsageReport,
    service_levels_report,
    usage_report,
)
from shared.domain.agreement.fields import CLIENT_ID_PATTERN
from shared.domain.periods import Period, parse_period, period_bounds, period_of
from shared.infra.agreement_view import Agreements
from shared.infra.http import READERS, ReaderCaller, invalid_parameter, scoped_client, state_of
from shared.infra.openapi import error_responses
from shared.ledger.reads import closed_periods, counts_between
from shared.ledger.service_levels import level_counts

#: SPEC §2's client id, whole-string (documented in the OpenAPI document, checked by FastAPI).
CLIENT_ID_PARAMETER: Final = f"^{CLIENT_ID_PATTERN}$"
#: `YYYY-MM`; the month and year range are checked by `checked_period`.
PERIOD_PARAMETER: Final = r"^[0-9]{4}-[0-9]{2}$"
#: SPEC §13: periods outside 2000-01..2099-12 are 422 on every endpoint.
FIRST_YEAR: Final = 2000
LAST_YEAR: Final = 2099


def checked_period(text: str) -> Period:
    """The period `text` names, or a ValueError saying what is wrong with it."""
    period = parse_period(text)
    if not FIRST_YEAR <= period.year <= LAST_YEAR:
        raise ValueError(f"period {text!r} is outside {FIRST_YEAR}-01..{LAST_YEAR}-12")
    return period


ClientId = Annotated[
    str,
    Path(
        pattern=CLIENT_ID_PARAMETER,
        description=f"The client, `{CLIENT_ID_PATTERN}`",
        examples=["acme"],
    ),
]
RequiredPeriod = Annotated[
    str,
    Query(
        pattern=PERIOD_PARAMETER,
        description="`YYYY-MM` within 2000-01..2099-12 (required)",
        examples=["2026-10"],
    ),
]
PeriodKey = Annotated[
    str | None,
    Query(
        pattern=PERIOD_PARAMETER,
        description="`YYYY-MM` within 2000-01..2099-12; the current period when left out",
        examples=["2026-10"],
    ),
]


@dataclass(frozen=True)
class Ledger:
    """What the usage API reads: the counts (PostgreSQL) and the agreements in force."""

    pool: asyncpg.Pool
    agreements: Agreements


LedgerDep = Annotated[Ledger, Depends(state_of(Ledger))]
router = APIRouter()


@router.get(
    "/v1/usage/{client_id}",
    summary="Running counts for a client and period",
    response_model=UsageReport,
    dependencies=READERS,
)
async def usage(
    client_id: ClientId, ledger: LedgerDep, period: PeriodKey = None
) -> UsageReport | Response:
    agreement = ledger.agreements.get(client_id)
    tz = agreement.timezone if agreement is not None else "UTC"
    try:
        wanted = checked_period(period) if period else period_of(datetime.now(UTC), tz)
    except ValueError as error:
        return invalid_parameter("query", "period", str(error))
    start, end = period_bounds(wanted, tz)
    counts = await counts_between(ledger.pool, client_id, start, end)
    closed = (await closed_periods(ledger.pool, [client_id])).get((client_id, wanted.key))
    billed = None if closed is None else TierChoice.billed(closed.tier_name, closed.tier_reason)
    return usage_report(
        client_id=client_id,
        period=wanted,
        agreement=agreement,
        counts=counts,
        billed_tier=billed,
        closed=closed is not None,
    )


@router.get(
    "/v1/service-levels/{client_id}",
    summary="A period's service levels, computed now",
    description=(
        "Every level of the client's current agreement, in order, measured over the period's "
        "items now (SPEC §11): `measured`, `met`, `attainment_percent` (two decimals, half-up; "
        "null when nothing was measured), `target_percent` and `missed` (measured and below "
        "target). `service_levels` is empty for a client without an agreement or whose "
        "agreement has no service levels."
    ),
    response_model=ServiceLevelsReport,
    dependencies=READERS,
    responses=error_responses(
        **{
            "403": "Not an admin key, nor the key of this client",
            "422": "A malformed client id, or a missing or malformed period",
        }
    ),
)
async def service_levels(
    client_id: ClientId, period: RequiredPeriod, caller: ReaderCaller, ledger: LedgerDep
) -> ServiceLevelsReport | Response:
    client = scoped_client(caller, client_id)
    assert client is not None
    try:
        wanted = checked_period(period)
    except ValueError as error:
        return invalid_parameter("query", "period", str(error))
    agreement = ledger.agreements.get(client)
    counts = None
    if agreement is not None and agreement.service_levels is not None:
        start, end = period_bounds(wanted, agreement.timezone)
        counts = await level_counts(ledger.pool, agreement, start, end)
    return service_levels_report(
        client_id=client, period=wanted, agreement=agreement, counts=counts
    )
