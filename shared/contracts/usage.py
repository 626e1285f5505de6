"""The usage report of SPEC §5 (`GET /v1/usage/{client_id}`): one typed definition that metering
answers with, its OpenAPI document shows and the tests read."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.invoice import TierChoice

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
