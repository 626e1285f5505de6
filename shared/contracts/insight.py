"""The insight documents of SPEC §8: `GET /v1/forecast/{client_id}` (`Forecast`) and
`GET /v1/recommendations/{client_id}` (`Recommendations`). Field order is the JSON's order;
money carries exactly the currency's minor digits, fractions four decimals.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from shared.contracts.invoice import InvoiceLine, PeriodKey, TierChoice
from shared.contracts.wire import Document, Fixed, Plain, UtcTimestamp, require_minor_digits
from shared.domain.agreement.fields import Complexity, ServiceLine

# --- forecast -----------------------------------------------------------------------------------


class RatedSummary(Document):
    """Usage rated as an invoice would be: its items, W, tier and total."""

    items: int
    weighted_units: Plain
    tier: TierChoice
    total: Fixed


class ProjectedSummary(Document):
    """The usage carried to the period end, rated, with the lines it would be invoiced with."""

    items: int
    weighted_units: Plain
    tier: TierChoice
    total: Fixed
    lines: tuple[InvoiceLine, ...]


class ForecastClass(Document):
    service_line: ServiceLine
    complexity: Complexity
    items: int
    projected_items: int
    weighted_units: Plain
    projected_weighted_units: Plain


class Forecast(Document):
    client_id: str
    period: PeriodKey
    currency: str
    as_of: UtcTimestamp
    elapsed_fraction: Fixed
    so_far: RatedSummary
    projected: ProjectedSummary
    by_class: tuple[ForecastClass, ...]

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        lines = [a for line in self.projected.lines for a in (line.unit_price, line.amount)]
        require_minor_digits(self.currency, [self.so_far.total, self.projected.total, *lines])
        return self


# --- recommendations ----------------------------------------------------------------------------


class ScopeShare(Document):
    """How many of the invoiced periods scope rather than volume set the tier."""

    count: int
    periods: int
    fraction: Fixed


class Rerated(Document):
    tier: TierChoice
    total: Fixed


class TierCost(Document):
    tier: str
    total: Fixed
    fits_volume: bool


class PeriodInsight(Document):
    period: PeriodKey
    items: int
    weighted_units: Plain
    tier: TierChoice
    rated: Rerated
    by_tier: tuple[TierCost, ...]


class MinItemsChange(Document):
    min_items: int
    current: int


class ScopeClass(Document):
    service_line: ServiceLine
    complexity: Complexity
    tier: str


class ScopeChange(Document):
    classes: tuple[ScopeClass, ...]


class ModeChange(Document):
    mode: Literal["upgrade", "surcharge"]
    current: Literal["upgrade", "surcharge"]


class TierChange(Document):
    tier: str


Change = Literal["min_items", "scope", "mode", "tier"]
_DETAILS: dict[Change, type[Document]] = {
    "min_items": MinItemsChange,
    "scope": ScopeChange,
    "mode": ModeChange,
    "tier": TierChange,
}


class Option(Document):
    """One candidate change, re-rating the whole history: totals before and after, the saving."""

    change: Change
    description: str
    details: MinItemsChange | ScopeChange | ModeChange | TierChange
    total_before: Fixed
    total_after: Fixed
    saving: Fixed

    @model_validator(mode="after")
    def _details_of_change(self) -> Self:
        if not isinstance(self.details, _DETAILS[self.change]):
            raise ValueError(f"the details of a {self.change!r} change are not those of one")
        return self


class Recommendations(Document):
    client_id: str
    currency: str
    scope_share: ScopeShare
    periods: tuple[PeriodInsight, ...]
    options: tuple[Option, ...]
    cheapest: Option | None

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        options = [*self.options, *([self.cheapest] if self.cheapest else [])]
        require_minor_digits(
            self.currency,
            [
                *(a for o in options for a in (o.total_before, o.total_after, o.saving)),
                *(p.rated.total for p in self.periods),
                *(c.total for p in self.periods for c in p.by_tier),
            ],
        )
        return self
