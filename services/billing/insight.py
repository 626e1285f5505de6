"""SPEC §8 insight: the open period's forecast, and right-sizing over the closed periods. Pure.

Nothing here reads the clock or the database: `now`, the counts and the history are passed in,
and every figure comes out of `shared.domain.rating`, so a forecast or a what-if is priced
exactly as an invoice would be. Money is Decimal throughout, rounded to the currency's minor unit
(`round_money`); the answers are the typed `Forecast` and `Recommendations` of
`shared.contracts.insight`, whose JSON carries the decimal strings.

**Forecast.** The usage so far is carried to the period end by `shared.domain.projection` (the one
projection the console's cards use too: run rate on UTC instants, half-up, none before
`MIN_ELAPSED_FOR_PROJECTION`), then rated; a period with no items projects to the floor fee.

**Recommendations.** Every what-if uses the *current* agreement and each closed period's usage as
it stands now (late items included), so `total_before` is the history re-rated today and a
saving isolates the effect of the one change. A change is expressed as a modified `Pricing`
(`model_copy(update=...)`) and rated by `rate_pricing`; nothing re-implements the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Final, Literal, TypeAlias

from shared.contracts.insight import (
    Change,
    Forecast,
    ForecastClass,
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
)
from shared.contracts.invoice import TierChoice, invoice_line
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import COMPLEXITIES, ServiceClass
from shared.domain.agreement.pricing import Pricing, Tier
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


def forecast(
    agreement: Agreement, period: Period, counts: Sequence[ClassCount], now: datetime
) -> Forecast:
    """The period's usage so far and its projection to the period end, both rated.

    `counts` are the period's counts in the agreement's timezone (unclassified ones are left
    out here). The caller decides whether the agreement is in force for `period`. `now` must
    be timezone-aware.
    """
    at = progress(*period_bounds(period, agreement.timezone), now)
    usage = billable_usage(list(counts))
    so_far = rate(agreement, usage)
    projected = rate(agreement, project_usage(usage, at))

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
    with localcontext(prec=EXACT_PRECISION):
        total_before = sum((rating.total for rating in ratings), Decimal(0))

    options: list[tuple[Decimal, Option]] = []
    if periods:
        candidates = [
            *_min_items_candidates(pricing, decisions),
            *_scope_candidates(pricing, decisions),
            _mode_candidate(pricing),
        ]
        for change, description, details, changed in candidates:
            with localcontext(prec=EXACT_PRECISION):
                after = sum((rate_pricing(changed, currency, u).total for u in usages), Decimal(0))
            options.append(_option(change, description, details, total_before, after, currency))
        options.append(_tier_option(pricing, decisions, tier_costs, total_before, currency))
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
    decisions: Sequence[TierDecision],
    tier_costs: Sequence[Sequence[Decimal]],
    total_before: Decimal,
    currency: str,
) -> tuple[Decimal, Option]:
    """Commit to one tier every period: the cheapest that holds every period's volume (the last
    tier always does, with overage)."""
    highest_volume = max(decision.volume_index for decision in decisions)
    with localcontext(prec=EXACT_PRECISION):
        totals = [
            (sum((costs[index] for costs in tier_costs), Decimal(0)), index)
            for index in range(highest_volume, len(pricing.tiers))
        ]
    total_after, index = min(totals)
    tier = pricing.tiers[index]
    description = (
        f"Commit to the {tier.name} tier every period: classes outside its scope are charged "
        "out of scope instead of moving up a tier"
    )
    details = TierChange(tier=tier.name)
    return _option("tier", description, details, total_before, total_after, currency)


def _option(
    change: Change,
    description: str,
    details: MinItemsChange | ScopeChange | ModeChange | TierChange,
    total_before: Decimal,
    total_after: Decimal,
    currency: str,
) -> tuple[Decimal, Option]:
    # All three amounts are sums of rounded invoice totals, so they carry the currency's digits.
    with localcontext(prec=EXACT_PRECISION):
        saving = total_before - total_after
    return saving, Option(
        change=change,
        description=description,
        details=details,
        total_before=round_money(total_before, currency),
        total_after=round_money(total_after, currency),
        saving=round_money(saving, currency),
    )


# --- helpers ------------------------------------------------------------------------------------


def _fraction(part: int, whole: int) -> Decimal:
    """part / whole with FRACTION_PLACES decimals, half-up; 0.0000 when whole is 0."""
    scale = 10**FRACTION_PLACES
    units = divide_half_up(part * scale, whole) if whole > 0 else 0
    return Decimal(units).scaleb(-FRACTION_PLACES)
