"""Service-level attainment (SPEC §11, §13): which levels a period met, and what a miss credits.
Pure.

The ledger counts, per level, the items it *measures* (billable in the period, of the level's
class, with `opened_at`) and those that *met* it (turnaround at most `within_hours`, on the
level's clock): `shared.ledger.service_levels`. Everything decided from those counts is here:
attainment, a miss (compared exactly: met × 100 < target × measured) and the credit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Final

from shared.domain.agreement.terms import ServiceLevel, ServiceLevels
from shared.domain.money import EXACT_PRECISION, format_decimal, round_money

_HUNDRED: Final = Decimal(100)
_CENT: Final = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class LevelCount:
    """A level's items in a period: how many it measured, how many met it."""

    measured: int
    met: int

    def __post_init__(self) -> None:
        if not 0 <= self.met <= self.measured:
            raise ValueError("met must lie between 0 and measured")


@dataclass(frozen=True, slots=True)
class LevelResult:
    """One level's line of the invoice's `service_levels` report."""

    level: ServiceLevel
    measured: int
    met: int

    @property
    def attainment_percent(self) -> Decimal | None:
        """met ÷ measured × 100, two decimals, half-up; None when nothing was measured."""
        if self.measured == 0:
            return None
        with localcontext(prec=EXACT_PRECISION):
            exact = Decimal(self.met) * _HUNDRED / Decimal(self.measured)
            return exact.quantize(_CENT, rounding=ROUND_HALF_UP)

    @property
    def missed(self) -> bool:
        """Measured and below target, compared exactly (no rounded attainment decides it)."""
        return self.measured > 0 and self.met * _HUNDRED < self.level.target_percent * self.measured

    def to_wire(self) -> dict[str, Any]:
        attainment = self.attainment_percent
        return {
            "id": self.level.id,
            "measured": self.measured,
            "met": self.met,
            "attainment_percent": None if attainment is None else f"{attainment:f}",
            "target_percent": format_decimal(self.level.target_percent),
            "missed": self.missed,
        }


def assess(terms: ServiceLevels, counts: Sequence[LevelCount]) -> tuple[LevelResult, ...]:
    """Every level of `terms`, in order, with its counts (`counts[i]` for `terms.levels[i]`)."""
    if len(counts) != len(terms.levels):
        raise ValueError(f"{len(counts)} counts for {len(terms.levels)} levels")
    return tuple(
        LevelResult(level, count.measured, count.met)
        for level, count in zip(terms.levels, counts, strict=True)
    )


def credit(terms: ServiceLevels, level: ServiceLevel, tier_fee: Decimal, currency: str) -> Decimal:
    """What a missed level credits: −(tier fee × at_risk_percent ÷ 100 × pool_percent ÷ 100),
    the positive amount rounded half-up to the currency, then negated (never -0)."""
    with localcontext(prec=EXACT_PRECISION):
        share = tier_fee * terms.at_risk_percent * level.pool_percent / (_HUNDRED * _HUNDRED)
    amount = round_money(share, currency)
    return -amount if amount else amount
