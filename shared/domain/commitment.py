"""The annual commitment (SPEC §11): contract years and the true-up of a year's shortfall. Pure.

Contract years are 12 consecutive periods, the first starting with the period that contains the
agreement's `effective_from`. A year's *committed spend* is what was billed for each of its
periods (SPEC §6's "billed for a period": the invoice, its late adjustments and notes) leaving out
service credits, which are the client's remedy and never spend. On the invoice of a year's 12th
period a shortfall against `annual_minimum` is billed as a last line, `commitment_true_up`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import Final

from shared.domain.money import EXACT_PRECISION, round_money
from shared.domain.periods import Period

PERIODS_PER_YEAR: Final = 12


@dataclass(frozen=True, slots=True)
class ContractYear:
    """The `number`-th contract year (1 = the first), periods `first` .. `last`."""

    number: int
    first: Period

    @property
    def periods(self) -> tuple[Period, ...]:
        periods = [self.first]
        while len(periods) < PERIODS_PER_YEAR:
            periods.append(periods[-1].next())
        return tuple(periods)

    def is_last(self, period: Period) -> bool:
        """Whether `period` is the year's 12th: its invoice carries the true-up."""
        return period == self.last

    @property
    def last(self) -> Period:
        return self.periods[-1]

    @property
    def label(self) -> str:
        """How an invoice line names it: `2026-01..2026-12`."""
        return f"{self.first.key}..{self.last.key}"


def contract_year(effective_from: date, period: Period) -> ContractYear | None:
    """The contract year `period` lies in; None before the first one starts."""
    start = Period(effective_from.year, effective_from.month)
    months = (period.year - start.year) * 12 + (period.month - start.month)
    if months < 0:
        return None
    number = months // PERIODS_PER_YEAR
    year, month = divmod(start.year * 12 + start.month - 1 + number * PERIODS_PER_YEAR, 12)
    return ContractYear(number + 1, Period(year, month + 1))


def spend(billed_total: Decimal, credits: Decimal) -> Decimal:
    """A period's committed spend: what is billed for it without its service credits (which
    are 0 or negative, so spend is billed minus credits)."""
    with localcontext(prec=EXACT_PRECISION):
        return billed_total - credits


def shortfall(
    annual_minimum: Decimal, spends: Mapping[Period, Decimal] | Iterable[Decimal], currency: str
) -> Decimal | None:
    """What the year's committed spend falls short of `annual_minimum`; None when it does
    not (a true-up line is billed only for a positive shortfall)."""
    values = spends.values() if isinstance(spends, Mapping) else spends
    with localcontext(prec=EXACT_PRECISION):
        total = sum(values, Decimal(0))
        missing = round_money(annual_minimum - total, currency)
    return missing if missing > 0 else None
