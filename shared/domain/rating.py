"""The tier decision and the invoice lines of SPEC §6, and the usage alerts of §5. Pure.

Input is the agreement's pricing and a period's usage per class (unclassified items are not
usage). All arithmetic is exact Decimal; each line amount is rounded half-up to the currency's
minor unit once, and the total is the sum of the rounded amounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Final, Literal, NamedTuple, TypeAlias

from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import Complexity, ServiceClass, ServiceLine
from shared.domain.agreement.pricing import Pricing, Tier
from shared.domain.attainment import LevelCount, LevelResult, assess, credit
from shared.domain.money import EXACT_PRECISION, format_decimal, round_money

Reason: TypeAlias = Literal["volume", "scope"]
LineKind: TypeAlias = Literal[
    "tier_fee", "out_of_scope", "overage", "service_credit", "late_adjustment", "commitment_true_up"
]

_ONE: Final = Decimal(1)


@dataclass(frozen=True, slots=True)
class ClassUsage:
    """A period's billable usage of one class."""

    service_class: ServiceClass
    items: int
    units: int
    handling_seconds: int = 0

    def __post_init__(self) -> None:
        if min(self.items, self.units, self.handling_seconds) < 0:
            raise ValueError("usage counts must not be negative")


@dataclass(frozen=True, slots=True)
class RatedClass:
    """A class's usage with its weighted units."""

    service_class: ServiceClass
    items: int
    units: int
    handling_seconds: int
    weighted_units: Decimal


@dataclass(frozen=True, slots=True)
class TierDecision:
    """Steps 1-6 of §6. Indexes point into `pricing.tiers`."""

    weighted_units: Decimal  # W
    volume_index: int  # V
    scope_index: int  # S
    tier_index: int  # T
    tier: Tier
    reason: Reason
    #: Every class with usage, in §3 order.
    classes: tuple[RatedClass, ...]
    #: Classes with items that T's scope does not cover, in §3 order.
    out_of_scope: tuple[RatedClass, ...]
    #: Weighted units above T's up_to when T is the last tier and bounded; else 0.
    overage: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    service_line: ServiceLine | None = None
    complexity: Complexity | None = None
    period: str | None = None
    service_level: str | None = None


@dataclass(frozen=True, slots=True)
class Rating:
    """A rated period: the decision, the invoice lines in §6 order and their total, and the
    service levels it was measured against (None: the agreement has none)."""

    currency: str
    decision: TierDecision
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    service_levels: tuple[LevelResult, ...] | None = None

    @property
    def credits(self) -> Decimal:
        """The sum of its `service_credit` lines (0 or negative): never spend (§11)."""
        return _sum_amounts(
            (line for line in self.lines if line.kind == "service_credit"), self.currency
        )

    def with_lines(self, *extra: InvoiceLine) -> Rating:
        """This rating with more lines (late adjustments) appended and the total updated."""
        lines = self.lines + extra
        return replace(self, lines=lines, total=_sum_amounts(lines, self.currency))


# --- weighted units and the tier decision -------------------------------------------------------


def weighted_units(
    pricing: Pricing, service_class: ServiceClass, items: int, units: int
) -> Decimal:
    """weights[complexity] × (units if the line is on a units basis, else items)."""
    count = units if pricing.counts_units(service_class.service_line) else items
    with localcontext(prec=EXACT_PRECISION):
        return pricing.weights.of(service_class.complexity) * count


def decide_tier(pricing: Pricing, usage: Iterable[ClassUsage]) -> TierDecision:
    """Which tier a period lands in, and why (§6 steps 1-6)."""
    classes = _rated_classes(pricing, usage)
    tiers = pricing.tiers
    last = len(tiers) - 1
    with localcontext(prec=EXACT_PRECISION):
        total = sum((c.weighted_units for c in classes), Decimal(0))

    volume = next((i for i, t in enumerate(tiers) if t.up_to is None or total <= t.up_to), last)
    policy = pricing.scope_policy
    significant = [c.service_class for c in classes if c.items >= policy.min_items]
    scope = next((i for i, t in enumerate(tiers) if all(map(t.covers, significant))), last)
    # Under surcharge the tier is the volume tier and the reason is always volume: scope
    # never set the tier, it only adds out-of-scope lines.
    upgraded = policy.mode == "upgrade" and scope > volume
    index = scope if upgraded else volume
    tier = tiers[index]

    out_of_scope = tuple(c for c in classes if c.items >= 1 and not tier.covers(c.service_class))
    overage = Decimal(0)
    if index == last and tier.up_to is not None and total > tier.up_to:
        with localcontext(prec=EXACT_PRECISION):
            overage = total - tier.up_to
    return TierDecision(
        weighted_units=total,
        volume_index=volume,
        scope_index=scope,
        tier_index=index,
        tier=tier,
        reason="scope" if upgraded else "volume",
        classes=classes,
        out_of_scope=out_of_scope,
        overage=overage,
    )


def usage_by_class(usage: Iterable[ClassUsage]) -> list[ClassUsage]:
    """One entry per class, in §3 order: several entries of one class are added up, so a caller
    may pass raw rows."""
    totals: dict[ServiceClass, tuple[int, int, int]] = {}
    for row in usage:
        items, units, seconds = totals.get(row.service_class, (0, 0, 0))
        totals[row.service_class] = (
            items + row.items,
            units + row.units,
            seconds + row.handling_seconds,
        )
    return [
        ClassUsage(service_class, items, units, seconds)
        for service_class, (items, units, seconds) in sorted(totals.items())
    ]


def _rated_classes(pricing: Pricing, usage: Iterable[ClassUsage]) -> tuple[RatedClass, ...]:
    return tuple(
        RatedClass(
            row.service_class,
            row.items,
            row.units,
            row.handling_seconds,
            weighted_units(pricing, row.service_class, row.items, row.units),
        )
        for row in usage_by_class(usage)
    )


# --- the invoice --------------------------------------------------------------------------------


def rate(
    agreement: Agreement,
    usage: Iterable[ClassUsage],
    levels: Sequence[LevelCount] | None = None,
) -> Rating:
    """The invoice of a period for this agreement and usage (late adjustments and the true-up
    excluded). `levels` are the period's counts per service level, in the agreement's order;
    required exactly when the agreement has service levels, whose misses add credit lines."""
    rating = rate_pricing(agreement.pricing, agreement.currency, usage)
    terms = agreement.service_levels
    if terms is None:
        if levels is not None:
            raise ValueError("service-level counts for an agreement without service levels")
        return rating
    if levels is None:
        raise ValueError("an agreement with service levels is rated with their counts")
    results = assess(terms, levels)
    fee = rating.decision.tier.fee
    credits = tuple(
        service_credit_line(result, credit(terms, result.level, fee, agreement.currency))
        for result in results
        if result.missed
    )
    return replace(rating.with_lines(*credits), service_levels=results)


def rate_pricing(pricing: Pricing, currency: str, usage: Iterable[ClassUsage]) -> Rating:
    decision = decide_tier(pricing, usage)
    lines = invoice_lines(pricing, currency, decision)
    return Rating(currency, decision, lines, _sum_amounts(lines, currency))


def invoice_lines(
    pricing: Pricing, currency: str, decision: TierDecision
) -> tuple[InvoiceLine, ...]:
    """tier_fee, then one out_of_scope line per class (§3 order), then overage if any."""
    tier = decision.tier
    lines = [
        _line(
            "tier_fee",
            f"{tier.name} tier ({decision.reason})",
            _ONE,
            tier.fee,
            currency,
        )
    ]
    rate_per_unit = pricing.scope_policy.out_of_scope_rate
    for rated in decision.out_of_scope:
        line, complexity = rated.service_class.service_line, rated.service_class.complexity
        lines.append(
            _line(
                "out_of_scope",
                f"{line} / {complexity}: outside the {tier.name} tier scope",
                rated.weighted_units,
                rate_per_unit,
                currency,
                service_line=line,
                complexity=complexity,
            )
        )
    if decision.overage > 0 and pricing.overage_rate is not None:
        lines.append(
            _line(
                "overage",
                f"Overage above {format_decimal(tier.up_to or 0)} weighted units",
                decision.overage,
                pricing.overage_rate,
                currency,
            )
        )
    return tuple(lines)


def adjustment_amount(rerated_total: Decimal, already_billed: Decimal, currency: str) -> Decimal:
    """SPEC §6's rule for a period billed before: its total re-rated now minus everything
    already billed for it (its invoice, its late adjustments, its notes). A late adjustment line
    and a note (§10) both bill this."""
    with localcontext(prec=EXACT_PRECISION):
        return round_money(rerated_total - already_billed, currency)


def service_credit_line(result: LevelResult, amount: Decimal) -> InvoiceLine:
    """A missed level's credit: quantity 1, unit price = amount (negative)."""
    attained = result.attainment_percent
    return InvoiceLine(
        kind="service_credit",
        description=(
            f"Service credit: {result.level.id} attained {attained:f}% "
            f"against {format_decimal(result.level.target_percent)}%"
        ),
        quantity=_ONE,
        unit_price=amount,
        amount=amount,
        service_level=result.level.id,
    )


def commitment_true_up_line(year: str, shortfall: Decimal, currency: str) -> InvoiceLine:
    """The contract year's shortfall against its annual minimum, billed on its 12th period."""
    amount = round_money(shortfall, currency)
    return InvoiceLine(
        kind="commitment_true_up",
        description=f"Annual commitment true-up for the contract year {year}",
        quantity=_ONE,
        unit_price=amount,
        amount=amount,
    )


def late_adjustment_line(
    period_key: str, rerated_total: Decimal, already_billed: Decimal, currency: str
) -> InvoiceLine:
    """One earlier period re-rated with its late items: quantity 1, unit price = amount =
    re-rated total minus everything already billed for it. Negative and zero amounts are
    still lines."""
    amount = adjustment_amount(rerated_total, already_billed, currency)
    return InvoiceLine(
        kind="late_adjustment",
        description=f"Late items adjustment for {period_key}",
        quantity=_ONE,
        unit_price=amount,
        amount=amount,
        period=period_key,
    )


def _line(
    kind: LineKind,
    description: str,
    quantity: Decimal,
    unit_price: Decimal,
    currency: str,
    *,
    service_line: ServiceLine | None = None,
    complexity: Complexity | None = None,
) -> InvoiceLine:
    with localcontext(prec=EXACT_PRECISION):
        amount = round_money(quantity * unit_price, currency)
    return InvoiceLine(
        kind,
        description,
        quantity,
        round_money(unit_price, currency),
        amount,
        service_line=service_line,
        complexity=complexity,
    )


def _sum_amounts(lines: Iterable[InvoiceLine], currency: str) -> Decimal:
    with localcontext(prec=EXACT_PRECISION):
        return round_money(sum((line.amount for line in lines), Decimal(0)), currency)


# --- usage alerts (§5) --------------------------------------------------------------------------

AlertKind: TypeAlias = Literal["80", "100", "scope"]
_ALERT_ORDER: Final[dict[AlertKind, int]] = {"80": 0, "100": 1, "scope": 2}
_EIGHTY_PERCENT: Final = Decimal("0.8")


class ThresholdAlert(NamedTuple):
    threshold: AlertKind
    tier_name: str


def threshold_alerts(
    pricing: Pricing, before: Iterable[ClassUsage], after: Iterable[ClassUsage]
) -> tuple[ThresholdAlert, ...]:
    """Alerts an open period newly earned when its usage grew from `before` to `after`.

    - ("80", tier) / ("100", tier): W reached 80 % / 100 % of the `up_to` of the tier it is in;
      also every such threshold of a tier W passed through on the way (a big batch can jump
      from 700 to 1200 past Essential's 800 and 1000).
    - ("scope", tier): scope alone put the period in `tier` (reason `scope`).
    Pure and stateless: metering remembers what it sent, so each threshold goes out once per
    client and period. Ordered by tier, then 80 / 100 / scope.
    """
    old, new = decide_tier(pricing, before), decide_tier(pricing, after)
    alerts = _held_alerts(new) - _held_alerts(old)
    for index in range(old.tier_index, new.tier_index + 1):
        tier = pricing.tiers[index]
        if tier.up_to is None:
            continue
        levels: tuple[tuple[AlertKind, Decimal], ...] = (
            ("80", _EIGHTY_PERCENT * tier.up_to),
            ("100", tier.up_to),
        )
        for kind, level in levels:
            if old.weighted_units < level <= new.weighted_units:
                alerts.add(ThresholdAlert(kind, tier.name))
    position = {tier.name: i for i, tier in enumerate(pricing.tiers)}
    return tuple(sorted(alerts, key=lambda a: (position[a.tier_name], _ALERT_ORDER[a.threshold])))


def _held_alerts(decision: TierDecision) -> set[ThresholdAlert]:
    """The thresholds a decision stands at: how full its tier is, and whether scope set it."""
    held: set[ThresholdAlert] = set()
    tier, used = decision.tier, decision.weighted_units
    if tier.up_to is not None:
        if used >= _EIGHTY_PERCENT * tier.up_to:
            held.add(ThresholdAlert("80", tier.name))
        if used >= tier.up_to:
            held.add(ThresholdAlert("100", tier.name))
    if decision.reason == "scope":
        held.add(ThresholdAlert("scope", tier.name))
    return held
