"""SPEC §8 insight: the open period's forecast, and right-sizing over the closed periods. Pure.

Nothing here reads the clock or the database: `now`, the counts and the history are passed in,
and every figure comes out of `shared.domain.rating`, so a forecast or a what-if is priced
exactly as an invoice would be. Money is Decimal throughout, rounded to the currency's minor unit
(`round_money`); the answers are the typed `Forecast` and `Recommendations` of
`shared.contracts.insight`, whose JSON carries the decimal strings.

**Forecast.** The usage so far is carried to the period end by `shared.domain.projection` (the one
projection the console's cards use too: run rate on UTC instants, half-up, none before
`MIN_ELAPSED_FOR_PROJECTION`), then rated; a period with no items projects to the floor fee.
With service levels (SPEC §11) both ratings take the period's level counts as they stand: an
attainment is a ratio, which more volume at the same pace does not move, so the projection
credits the levels missed so far against the projected tier's fee. With a commitment the
forecast projects the contract year (`ForecastCommitment`): the year's closed periods count what
is billed for them less their credits (`commitment.spend`), this period its projected total less
its projected credits, and every other period of the year not closed yet the same as this one;
the projected true-up is the shortfall of that against the annual minimum (`commitment.shortfall`).

**Recommendations.** Every what-if uses the *current* agreement and each closed period's usage as
it stands now (late items included), so `total_before` is the history re-rated today and a
saving isolates the effect of the one change. A change is expressed as a modified `Pricing`
(`model_copy(update=...)`) and rated by `rate_pricing`; nothing re-implements the arithmetic.
Totals leave service credits out (they depend on turnaround, not on pricing). With a commitment
no side of a change costs a contract year less than its minimum: the compared periods of each
year cost their spend plus its shortfall against the year's minimum — the whole `annual_minimum`
for a complete year, `annual_minimum × n ÷ 12` (half-up) for the n compared periods of a year
still running, as if its other periods went on at their average — and the saving is the
difference of those costs (`Option.commitment` shows each year's figures).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Final, Literal, TypeAlias

from shared.contracts.insight import (
    Change,
    Forecast,
    ForecastClass,
    ForecastCommitment,
    MinItemsChange,
    ModeChange,
    Option,
    PeriodInsight,
    ProjectedSummary,
    RatedSummary,
    Recommendations,
    Rerated,
    ScopeChange,
    ScopeClass,
    ScopeShare,
    TierChange,
    TierCost,
    YearCost,
)
from shared.contracts.invoice import ServiceLevelReport, TierChoice, invoice_line
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import COMPLEXITIES, ServiceClass
from shared.domain.agreement.pricing import Pricing, Tier
from shared.domain.attainment import LevelCount
from shared.domain.commitment import PERIODS_PER_YEAR, ContractYear, contract_year, shortfall, spend
from shared.domain.money import EXACT_PRECISION, round_money
from shared.domain.periods import Period, period_bounds
from shared.domain.projection import divide_half_up, progress, project_usage
from shared.domain.rating import ClassUsage, Rating, Reason, TierDecision, rate, rate_pricing
from shared.domain.usage import ClassCount, billable_usage

#: Decimal places of the fractions reported (`elapsed_fraction`, `scope_share.fraction`).
FRACTION_PLACES: Final = 4

#: One invoiced period: its key, its billable usage as it stands, and the tier it was billed at.
BilledPeriod: TypeAlias = tuple[Period, Sequence[ClassUsage], str, Reason]

#: A candidate change: its kind, a description, its details and the pricing it would give.
Candidate: TypeAlias = tuple[
    Change, str, MinItemsChange | ScopeChange | ModeChange | TierChange, Pricing
]


# --- forecast -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Billed:
    """A closed period as billing recorded it: everything billed for it so far (None: closed
    unbilled) and the service credits inside that (0 or negative)."""

    billed_total: Decimal | None
    credits: Decimal = Decimal(0)


def forecast(
    agreement: Agreement,
    period: Period,
    counts: Sequence[ClassCount],
    now: datetime,
    levels: Sequence[LevelCount] | None = None,
    closed: Mapping[str, Billed] | None = None,
) -> Forecast:
    """The period's usage so far and its projection to the period end, both rated.

    `counts` are the period's counts in the agreement's timezone (unclassified ones are left
    out here). The caller decides whether the agreement is in force for `period`. `now` must
    be timezone-aware. `levels` are the period's service-level counts (`rate`'s: required
    exactly when the agreement has service levels); `closed` the client's closed periods by
    key (at least those of `period`'s contract year), required when it has a commitment.
    """
    at = progress(*period_bounds(period, agreement.timezone), now)
    usage = billable_usage(list(counts))
    so_far = rate(agreement, usage, levels)
    # The same level counts: a projection carries volume, not turnaround (module docstring).
    projected = rate(agreement, project_usage(usage, at), levels)

    currency = agreement.currency
    projected_classes = {c.service_class: c for c in projected.decision.classes}
    summary = _summary(projected)
    return Forecast(
        client_id=agreement.client_id,
        period=period.key,
        currency=currency,
        as_of=now.replace(microsecond=0),
        elapsed_fraction=at.fraction(FRACTION_PLACES),
        so_far=_summary(so_far),
        projected=ProjectedSummary(
            items=summary.items,
            weighted_units=summary.weighted_units,
            tier=summary.tier,
            total=summary.total,
            lines=tuple(invoice_line(line, currency) for line in projected.lines),
        ),
        by_class=tuple(
            ForecastClass(
                service_line=c.service_class.service_line,
                complexity=c.service_class.complexity,
                items=c.items,
                projected_items=projected_classes[c.service_class].items,
                weighted_units=c.weighted_units,
                projected_weighted_units=projected_classes[c.service_class].weighted_units,
            )
            for c in so_far.decision.classes
        ),
        service_levels=(
            None
            if so_far.service_levels is None
            else tuple(ServiceLevelReport.of(result) for result in so_far.service_levels)
        ),
        commitment=_projected_year(agreement, period, projected, closed),
    )


def _projected_year(
    agreement: Agreement, period: Period, projected: Rating, closed: Mapping[str, Billed] | None
) -> ForecastCommitment | None:
    """The contract year of `period` at its end: the closed periods as billed, this one as
    projected and every other one not closed yet like this one, against the annual minimum."""
    commitment, effective_from = agreement.commitment, agreement.effective_from
    if commitment is None or effective_from is None:
        return None
    if closed is None:
        raise ValueError("an agreement with a commitment is forecast with its closed periods")
    year = contract_year(effective_from, period)
    if year is None:  # before the first contract year: not billed under this agreement
        return None
    currency = agreement.currency
    others = [each for each in year.periods if each != period]
    done = [closed[each.key] for each in others if each.key in closed]
    remaining = len(others) - len(done)
    with localcontext(prec=EXACT_PRECISION):
        spent = sum(
            (spend(b.billed_total, b.credits) for b in done if b.billed_total is not None),
            Decimal(0),
        )
    period_spend = spend(projected.total, projected.credits)
    spends = [spent, *[period_spend] * (1 + remaining)]
    with localcontext(prec=EXACT_PRECISION):
        projected_spend = sum(spends, Decimal(0))
    true_up = shortfall(commitment.annual_minimum, spends, currency) or Decimal(0)
    return ForecastCommitment(
        annual_minimum=round_money(commitment.annual_minimum, currency),
        year=year.label,
        year_end_period=year.last.key,
        spend_so_far=round_money(spent, currency),
        closed_periods=len(done),
        period_spend=round_money(period_spend, currency),
        remaining_periods=remaining,
        projected_spend=round_money(projected_spend, currency),
        projected_true_up=round_money(true_up, currency),
    )


def _summary(rating: Rating) -> RatedSummary:
    decision = rating.decision
    return RatedSummary(
        items=sum(c.items for c in decision.classes),
        weighted_units=decision.weighted_units,
        tier=TierChoice.of(decision),
        total=round_money(rating.total, rating.currency),
    )


# --- recommendations ----------------------------------------------------------------------------


def recommendations(agreement: Agreement, history: Iterable[BilledPeriod]) -> Recommendations:
    """Over the invoiced periods in `history`: how often scope set the tier, what each period
    would have cost in each tier, and the candidate changes with their saving (best first).

    Options (each re-rates the whole history under the current agreement with one change):
    - `min_items`: the smallest `min_items` that stops every scope upgrade seen;
    - `scope`: a class that forced an upgrade added to the scope of the lowest volume tier it
      forced up from (`details.classes[].tier`) and of every tier above that lacks it, one
      option per class, plus all such classes at once when there are several;
    - `mode`: the other scope policy mode (`surcharge` ↔ `upgrade`);
    - `tier`: committing to the one tier that would have been cheapest overall among the tiers
      that hold every period's volume (classes outside its scope charged out-of-scope).
    With a commitment, each side of a change costs every contract year at least its minimum
    (module docstring; `Option.commitment`).
    `cheapest` is the first option if it saves money, else null.
    """
    periods = sorted(history, key=lambda entry: entry[0])
    pricing, currency = agreement.pricing, agreement.currency
    usages = [tuple(usage) for _, usage, _, _ in periods]
    ratings = [rate_pricing(pricing, currency, usage) for usage in usages]
    decisions = [rating.decision for rating in ratings]
    tier_costs = [
        [_cost_in_tier(pricing, currency, index, usage) for index in range(len(pricing.tiers))]
        for usage in usages
    ]
    compared = _Compared.of(agreement, [period for period, _, _, _ in periods], ratings)

    options: list[tuple[Decimal, Option]] = []
    if periods:
        candidates = [
            *_min_items_candidates(pricing, decisions),
            *_scope_candidates(pricing, decisions),
            _mode_candidate(pricing),
        ]
        for change, description, details, changed in candidates:
            after = [rate_pricing(changed, currency, u).total for u in usages]
            options.append(_option(compared, change, description, details, after))
        options.append(_tier_option(pricing, compared, decisions, tier_costs))
        options.sort(key=lambda option: -option[0])  # stable: ties keep the order above

    scoped = sum(1 for _, _, _, reason in periods if reason == "scope")
    return Recommendations(
        client_id=agreement.client_id,
        currency=currency,
        scope_share=ScopeShare(
            count=scoped, periods=len(periods), fraction=_fraction(scoped, len(periods))
        ),
        periods=tuple(
            PeriodInsight(
                period=period.key,
                items=sum(c.items for c in rating.decision.classes),
                weighted_units=rating.decision.weighted_units,
                tier=TierChoice(name=tier_name, reason=reason),
                rated=Rerated(
                    tier=TierChoice.of(rating.decision), total=round_money(rating.total, currency)
                ),
                by_tier=tuple(
                    TierCost(
                        tier=tier.name,
                        total=round_money(cost, currency),
                        fits_volume=index >= rating.decision.volume_index,
                    )
                    for index, (tier, cost) in enumerate(zip(pricing.tiers, costs, strict=True))
                ),
            )
            for (period, _, tier_name, reason), rating, costs in zip(
                periods, ratings, tier_costs, strict=True
            )
        ),
        options=tuple(option for _, option in options),
        cheapest=options[0][1] if options and options[0][0] > 0 else None,
    )


def _cost_in_tier(
    pricing: Pricing, currency: str, index: int, usage: Sequence[ClassUsage]
) -> Decimal:
    """The period's total when placed in tier `index`: its fee, out-of-scope charges for the
    classes it does not cover, and overage only if it is the last tier (and bounded).

    Rated as a one-tier ladder; a lower tier is made unbounded there, since overage is charged
    only above the top tier."""
    tier = pricing.tiers[index]
    if index != len(pricing.tiers) - 1:
        tier = tier.model_copy(update={"up_to": None})
    return rate_pricing(pricing.model_copy(update={"tiers": (tier,)}), currency, usage).total


def _forcing_classes(pricing: Pricing, decision: TierDecision) -> list[ServiceClass]:
    """The classes that made scope move a period above its volume tier: enough items to count
    and outside the volume tier's scope. Empty unless scope set the tier."""
    if decision.reason != "scope":
        return []
    volume_tier = pricing.tiers[decision.volume_index]
    return [
        c.service_class
        for c in decision.classes
        if c.items >= pricing.scope_policy.min_items and not volume_tier.covers(c.service_class)
    ]


def _min_items_candidates(pricing: Pricing, decisions: Sequence[TierDecision]) -> list[Candidate]:
    policy = pricing.scope_policy
    counts = [
        c.items
        for decision in decisions
        for c in decision.classes
        if c.service_class in _forcing_classes(pricing, decision)
    ]
    if not counts:
        return []
    needed = max(counts) + 1
    changed = pricing.model_copy(
        update={"scope_policy": policy.model_copy(update={"min_items": needed})}
    )
    description = (
        f"Raise min_items from {policy.min_items} to {needed}: no class seen would upgrade "
        "the tier by scope; its items are charged out of scope instead"
    )
    details = MinItemsChange(min_items=needed, current=policy.min_items)
    return [("min_items", description, details, changed)]


def _scope_candidates(pricing: Pricing, decisions: Sequence[TierDecision]) -> list[Candidate]:
    # Each forcing class goes into the lowest volume tier it forced a period up from.
    lowest: dict[ServiceClass, int] = {}
    for decision in decisions:
        for service_class in _forcing_classes(pricing, decision):
            lowest[service_class] = min(
                lowest.get(service_class, decision.volume_index), decision.volume_index
            )
    moves = sorted(lowest.items())
    candidates = [_scope_candidate(pricing, [move]) for move in moves]
    if len(moves) > 1:
        candidates.append(_scope_candidate(pricing, moves))
    return candidates


def _scope_candidate(pricing: Pricing, moves: Sequence[tuple[ServiceClass, int]]) -> Candidate:
    tiers = list(pricing.tiers)
    for service_class, index in moves:
        for above in range(index, len(tiers)):
            tiers[above] = _with_class(tiers[above], service_class)
    names = [
        f"{c.service_line}/{c.complexity} into the {pricing.tiers[i].name} tier's scope"
        for c, i in moves
    ]
    effect = "it no longer forces" if len(moves) == 1 else "they no longer force"
    description = f"Move {' and '.join(names)}, so {effect} a higher tier"
    details = ScopeChange(
        classes=tuple(
            ScopeClass(
                service_line=c.service_line, complexity=c.complexity, tier=pricing.tiers[i].name
            )
            for c, i in moves
        )
    )
    return "scope", description, details, pricing.model_copy(update={"tiers": tuple(tiers)})


def _with_class(tier: Tier, service_class: ServiceClass) -> Tier:
    """`tier` with `service_class` in its scope."""
    if tier.covers(service_class) or isinstance(tier.scope, str):  # "all" covers everything
        return tier
    scope = dict(tier.scope)
    entry = scope.get(service_class.service_line)
    have = entry if isinstance(entry, tuple) else ()
    scope[service_class.service_line] = tuple(
        c for c in COMPLEXITIES if c in have or c == service_class.complexity
    )
    return tier.model_copy(update={"scope": scope})


def _mode_candidate(pricing: Pricing) -> Candidate:
    policy = pricing.scope_policy
    other: Literal["upgrade", "surcharge"] = "surcharge" if policy.mode == "upgrade" else "upgrade"
    description = {
        "surcharge": "Switch the scope policy to surcharge: stay in the volume tier and pay "
        "out-of-scope charges instead of moving up a tier",
        "upgrade": "Switch the scope policy to upgrade: move up to the tier whose scope covers "
        "the work instead of paying out-of-scope charges",
    }[other]
    changed = pricing.model_copy(update={"scope_policy": policy.model_copy(update={"mode": other})})
    return "mode", description, ModeChange(mode=other, current=policy.mode), changed


def _tier_option(
    pricing: Pricing,
    compared: _Compared,
    decisions: Sequence[TierDecision],
    tier_costs: Sequence[Sequence[Decimal]],
) -> tuple[Decimal, Option]:
    """Commit to one tier every period: the cheapest that holds every period's volume (the last
    tier always does, with overage); among tiers the commitment makes equally cheap, the one
    with the lower totals, then the lower tier."""
    highest_volume = max(decision.volume_index for decision in decisions)
    candidates = []
    for index in range(highest_volume, len(pricing.tiers)):
        totals = [costs[index] for costs in tier_costs]
        with localcontext(prec=EXACT_PRECISION):
            uncommitted = sum(totals, Decimal(0))
        candidates.append((compared.cost(totals).total, uncommitted, index, totals))
    _, _, index, totals = min(candidates, key=lambda candidate: candidate[:3])
    tier = pricing.tiers[index]
    description = (
        f"Commit to the {tier.name} tier every period: classes outside its scope are charged "
        "out of scope instead of moving up a tier"
    )
    return _option(compared, "tier", description, TierChange(tier=tier.name), totals)


@dataclass(frozen=True, slots=True)
class _YearSpend:
    """One contract year's compared periods under one pricing: what they cost without the
    commitment (`spend`) and with it (`cost` = spend + its shortfall against `minimum`)."""

    year: ContractYear
    periods: int
    minimum: Decimal
    spend: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class _Cost:
    """The compared periods' cost under one pricing: `uncommitted` is the sum of their totals,
    `total` counts each contract year at its `cost` instead."""

    uncommitted: Decimal
    total: Decimal
    years: tuple[_YearSpend, ...]


@dataclass(frozen=True, slots=True)
class _Compared:
    """The compared periods' contract years, in order (all None without a commitment; None
    for a period outside every year), and what the periods cost as they stand."""

    currency: str
    annual_minimum: Decimal | None
    years: tuple[ContractYear | None, ...]
    before: _Cost

    @classmethod
    def of(
        cls, agreement: Agreement, periods: Sequence[Period], ratings: Sequence[Rating]
    ) -> _Compared:
        commitment, effective_from = agreement.commitment, agreement.effective_from
        years: tuple[ContractYear | None, ...] = (None,) * len(periods)
        minimum = None
        if commitment is not None and effective_from is not None:
            minimum = commitment.annual_minimum
            years = tuple(contract_year(effective_from, period) for period in periods)
        before = _cost(agreement.currency, minimum, years, [rating.total for rating in ratings])
        return cls(agreement.currency, minimum, years, before)

    def cost(self, totals: Sequence[Decimal]) -> _Cost:
        """The periods' cost when they total `totals` (in order, without service credits)."""
        return _cost(self.currency, self.annual_minimum, self.years, totals)


def _cost(
    currency: str,
    annual_minimum: Decimal | None,
    years: Sequence[ContractYear | None],
    totals: Sequence[Decimal],
) -> _Cost:
    """Each contract year's compared periods cost their spend plus its shortfall against the
    year's minimum for them (annual_minimum × n ÷ 12, half-up); other periods their totals."""
    by_year: dict[ContractYear, list[Decimal]] = {}
    outside: list[Decimal] = []
    for year, total in zip(years, totals, strict=True):
        if year is None or annual_minimum is None:
            outside.append(total)
        else:
            by_year.setdefault(year, []).append(total)
    spent_by_year = []
    for year, spends in sorted(by_year.items(), key=lambda entry: entry[0].first):
        assert annual_minimum is not None
        with localcontext(prec=EXACT_PRECISION):
            minimum = round_money(annual_minimum * len(spends) / PERIODS_PER_YEAR, currency)
            spent = sum(spends, Decimal(0))
            cost = spent + (shortfall(minimum, spends, currency) or Decimal(0))
        spent_by_year.append(_YearSpend(year, len(spends), minimum, spent, cost))
    with localcontext(prec=EXACT_PRECISION):
        uncommitted = sum(totals, Decimal(0))
        total = sum(outside, Decimal(0)) + sum((y.cost for y in spent_by_year), Decimal(0))
    return _Cost(uncommitted, total, tuple(spent_by_year))


def _option(
    compared: _Compared,
    change: Change,
    description: str,
    details: MinItemsChange | ScopeChange | ModeChange | TierChange,
    totals_after: Sequence[Decimal],
) -> tuple[Decimal, Option]:
    # Every amount is a sum of rounded invoice totals and rounded minimums, so it carries the
    # currency's digits.
    currency, before = compared.currency, compared.before
    after = compared.cost(totals_after)
    with localcontext(prec=EXACT_PRECISION):
        saving = before.total - after.total
        uncommitted_saving = before.uncommitted - after.uncommitted
    if saving != uncommitted_saving:
        description += (
            f" (it saves {round_money(uncommitted_saving, currency)} before the annual "
            f"commitment, {round_money(saving, currency)} with it: its minimum is billed anyway)"
        )
    return saving, Option(
        change=change,
        description=description,
        details=details,
        total_before=round_money(before.total, currency),
        total_after=round_money(after.total, currency),
        saving=round_money(saving, currency),
        commitment=(
            None
            if compared.annual_minimum is None
            else tuple(
                YearCost(
                    year=b.year.label,
                    periods=b.periods,
                    minimum=b.minimum,
                    spend_before=round_money(b.spend, currency),
                    spend_after=round_money(a.spend, currency),
                    cost_before=round_money(b.cost, currency),
                    cost_after=round_money(a.cost, currency),
                )
                for b, a in zip(before.years, after.years, strict=True)
            )
        ),
    )


# --- helpers ------------------------------------------------------------------------------------


def _fraction(part: int, whole: int) -> Decimal:
    """part / whole with FRACTION_PLACES decimals, half-up; 0.0000 when whole is 0."""
    scale = 10**FRACTION_PLACES
    units = divide_half_up(part * scale, whole) if whole > 0 else 0
    return Decimal(units).scaleb(-FRACTION_PLACES)
