"""The usage report of SPEC §5 (`GET /v1/usage/{client_id}`): one typed definition that metering
answers with, the console's client page shows, its OpenAPI documents show and the tests read;
and `usage_report`, the one way both build it from the ledger's counts (pure: no I/O). The same
for the live service-level report of SPEC §11 (`GET /v1/service-levels/{client_id}`):
`ServiceLevelsReport`, built by `service_levels_report`."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.invoice import PeriodKey, ServiceLevelReport, TierChoice
from shared.contracts.wire import Document
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount, assess
from shared.domain.money import format_decimal
from shared.domain.periods import Period
from shared.domain.rating import decide_tier
from shared.domain.usage import ClassCount, billable_usage

#: A decimal as the documents write it: a string, never a float (SPEC §5, §7).
DecimalText = str


class ClassUsageReport(BaseModel):
    """The counts of one classified class."""

    model_config = ConfigDict(frozen=True)

    service_line: str
    complexity: str
    items: int
    units: int
    handling_seconds: int
    weighted_units: DecimalText = Field(description="Decimal string")


class UsageReport(BaseModel):
    """A client's running counts for a period, and the tier they land in (SPEC §5)."""

    model_config = ConfigDict(frozen=True)

    client_id: str
    period: str = Field(description="YYYY-MM")
    status: Literal["open", "closed"]
    items: int = Field(description="Classified items (unclassified ones are only counted apart)")
    units: int
    weighted_units: DecimalText = Field(description='Decimal string; "0" without a tier')
    late_items: int = Field(description="Items metered after the period closed")
    unclassified_items: int
    tier: TierChoice | None = Field(
        description="The tier if the period closed now; a closed period's billed tier; null "
        "without an agreement in force"
    )
    by_class: list[ClassUsageReport] = Field(description="By service line, then complexity")


def usage_report(
    *,
    client_id: str,
    period: Period,
    agreement: Agreement | None,
    counts: list[ClassCount],
    billed_tier: TierChoice | None,
    closed: bool,
) -> UsageReport:
    """Running counts and the tier they land in if the period closed now.

    A closed period shows the tier it was billed at. Without an agreement in force for the
    period there is no tier and nothing weighs anything (`weighted_units` "0").
    """
    usage = billable_usage(counts)
    in_force = agreement if agreement is not None and agreement.in_force_for(period) else None
    decision = decide_tier(in_force.pricing, usage) if in_force is not None else None
    weights = {c.service_class: c.weighted_units for c in decision.classes} if decision else {}
    tier = billed_tier if closed else (TierChoice.of(decision) if decision else None)
    return UsageReport(
        client_id=client_id,
        period=period.key,
        status="closed" if closed else "open",
        items=sum(u.items for u in usage),
        units=sum(u.units for u in usage),
        weighted_units=format_decimal(decision.weighted_units if decision else Decimal(0)),
        late_items=sum(c.late_items for c in counts if c.classified),
        unclassified_items=sum(c.items for c in counts if not c.classified),
        tier=tier,
        by_class=[
            ClassUsageReport(
                service_line=u.service_class.service_line,
                complexity=u.service_class.complexity,
                items=u.items,
                units=u.units,
                handling_seconds=u.handling_seconds,
                weighted_units=format_decimal(weights.get(u.service_class, Decimal(0))),
            )
            for u in sorted(usage, key=lambda u: u.service_class.sort_key)
        ],
    )


class ServiceLevelsReport(Document):
    """A client's service levels for a period, computed now with its current agreement (SPEC
    §11, §13): every level in order, as the invoice's `service_levels` reports them."""

    client_id: str
    period: PeriodKey
    service_levels: tuple[ServiceLevelReport, ...] = Field(
        description="Every level of the current agreement, in order; empty without an "
        "agreement or without service levels"
    )


def service_levels_report(
    *,
    client_id: str,
    period: Period,
    agreement: Agreement | None,
    counts: list[LevelCount] | None,
) -> ServiceLevelsReport:
    """The report of `counts` (the ledger's, one per level of `agreement`, in order; None when
    there are no levels to count)."""
    terms = agreement.service_levels if agreement is not None else None
    results = () if terms is None else assess(terms, () if counts is None else counts)
    return ServiceLevelsReport(
        client_id=client_id,
        period=period.key,
        service_levels=tuple(ServiceLevelReport.of(result) for result in results),
    )
