"""The insight documents of SPEC §8: `GET /v1/forecast/{client_id}` (`Forecast`) and
`GET /v1/recommendations/{client_id}` (`Recommendations`). Field order is the JSON's order;
money carries exactly the currency's minor digits, fractions four decimals.

The §11 terms add optional fields, left out of the JSON when the agreement has no such term (as
the invoice leaves out `service_levels`): the forecast's `service_levels` and `commitment`, and a
recommendation option's `commitment`. How each figure is worked out is in
`services.billing.insight`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from shared.contracts.invoice import InvoiceLine, PeriodKey, ServiceLevelReport, TierChoice
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


#: `2026-01..2026-12`: a contract year's first and last period (SPEC §11).
YearLabel = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}\.\.[0-9]{4}-[0-9]{2}$")]


class ForecastCommitment(Document):
    """The period's contract year against its annual minimum (SPEC §11), projected to the year
    end: the closed periods as billed, this period as projected, and every other period of the
    year not yet closed as this one."""

    annual_minimum: Fixed = Field(description="The current agreement's commitment, per year.")
    year: YearLabel = Field(description="The contract year the period lies in.")
    year_end_period: PeriodKey = Field(
        description="The year's 12th period, whose invoice carries the true-up."
    )
    spend_so_far: Fixed = Field(
        description="Committed spend of the year's closed periods other than this one: what is "
        "billed for each (invoice, late adjustments, notes) less its service credits; nothing "
        "for one closed unbilled."
    )
    closed_periods: int = Field(
        description="How many of the year's periods other than this one are closed."
    )
    period_spend: Fixed = Field(
        description="This period's projected total less its projected service credits."
    )
    remaining_periods: int = Field(
        description="The year's other periods not closed yet, each projected at period_spend."
    )
    projected_spend: Fixed = Field(
        description="spend_so_far + period_spend × (1 + remaining_periods)."
    )
    projected_true_up: Fixed = Field(
        description="max(0, annual_minimum − projected_spend), rounded to the currency: what "
        "the year's 12th invoice would true up."
    )


class Forecast(Document):
    client_id: str
    period: PeriodKey
    currency: str
    as_of: UtcTimestamp
    elapsed_fraction: Fixed
    so_far: RatedSummary
    projected: ProjectedSummary
    by_class: tuple[ForecastClass, ...]
    service_levels: tuple[ServiceLevelReport, ...] | None = Field(
        default=None,
        exclude_if=lambda levels: levels is None,
        description="The period's service levels so far (SPEC §11), every level in order; the "
        "projection keeps each attainment as it stands. Left out when the agreement has none.",
    )
    commitment: ForecastCommitment | None = Field(
        default=None,
        exclude_if=lambda commitment: commitment is None,
        description="The contract year projected to its end. Left out when the agreement has "
        "no commitment.",
    )

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        lines = [a for line in self.projected.lines for a in (line.unit_price, line.amount)]
        committed = self.commitment
        years = (
            []
            if committed is None
            else [
                committed.annual_minimum,
                committed.spend_so_far,
                committed.period_spend,
                committed.projected_spend,
                committed.projected_true_up,
            ]
        )
        require_minor_digits(
            self.currency, [self.so_far.total, self.projected.total, *lines, *years]
        )
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


class YearCost(Document):
    """What a change does to one contract year among the compared periods (SPEC §11): the
    commitment bills at least `minimum` for them whatever the change, so each side costs the
    larger of `minimum` and its spend."""

    year: YearLabel
    periods: int = Field(description="How many of the year's periods are compared.")
    minimum: Fixed = Field(
        description="annual_minimum × periods ÷ 12, half-up: the whole minimum for a complete "
        "year, its share for the compared periods of a year still running."
    )
    spend_before: Fixed = Field(
        description="The compared periods' totals without service credits, as they stand."
    )
    spend_after: Fixed = Field(description="The same under the change.")
    cost_before: Fixed = Field(description="max(minimum, spend_before).")
    cost_after: Fixed = Field(description="max(minimum, spend_after).")


class Option(Document):
    """One candidate change, re-rating the whole history: totals before and after, the saving.

    With a commitment the totals count each contract year at its `commitment[].cost_*` (the
    periods outside any year at their totals), so a saving the minimum would bill anyway is no
    saving; `commitment` is left out when the agreement has none."""

    change: Change
    description: str
    details: MinItemsChange | ScopeChange | ModeChange | TierChange
    total_before: Fixed
    total_after: Fixed
    saving: Fixed
    commitment: tuple[YearCost, ...] | None = Field(
        default=None,
        exclude_if=lambda years: years is None,
        description="Each contract year the compared periods touch; the totals count each at "
        "its cost_before / cost_after. Left out when the agreement has no commitment.",
    )

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
        years = [y for o in options for y in o.commitment or ()]
        require_minor_digits(
            self.currency,
            [
                *(a for o in options for a in (o.total_before, o.total_after, o.saving)),
                *(
                    a
                    for y in years
                    for a in (y.minimum, y.spend_before, y.spend_after, y.cost_before, y.cost_after)
                ),
                *(p.rated.total for p in self.periods),
                *(c.total for p in self.periods for c in p.by_tier),
            ],
        )
        return self
