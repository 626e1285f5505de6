"""The annual commitment (shared/domain/commitment.py, SPEC §11): contract years of 12 periods
starting with the period that holds `effective_from`, committed spend without service credits,
and the shortfall a year's 12th period trues up."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.commitment import ContractYear, contract_year, shortfall, spend
from shared.domain.periods import Period


def year_of(effective_from: date, period: Period) -> ContractYear:
    year = contract_year(effective_from, period)
    assert year is not None
    return year


def test_a_year_starts_with_the_period_holding_effective_from() -> None:
    mid_march = date(2026, 3, 15)
    year = year_of(mid_march, Period(2026, 3))
    assert (year.number, year.first, year.last) == (1, Period(2026, 3), Period(2027, 2))
    assert year.label == "2026-03..2027-02"
    assert year.periods == (
        *(Period(2026, month) for month in range(3, 13)),
        Period(2027, 1),
        Period(2027, 2),
    )
    assert year_of(mid_march, Period(2026, 11)) == year
    assert year.is_last(Period(2027, 2))
    assert not year.is_last(Period(2027, 1))
    assert not year.is_last(Period(2026, 3))


def test_periods_before_the_first_year_have_none() -> None:
    assert contract_year(date(2026, 3, 15), Period(2026, 2)) is None
    assert contract_year(date(2026, 3, 15), Period(2025, 12)) is None
    assert contract_year(date(2026, 3, 1), Period(2026, 3)) is not None


def test_the_second_year_follows_the_first() -> None:
    second = year_of(date(2026, 3, 15), Period(2027, 3))
    assert (second.number, second.label) == (2, "2027-03..2028-02")
    assert second.is_last(Period(2028, 2))
    assert year_of(date(2026, 3, 15), Period(2028, 2)) == second
    assert year_of(date(2026, 3, 15), Period(2028, 3)).number == 3


def test_a_year_starting_in_december_or_january() -> None:
    assert year_of(date(2026, 12, 31), Period(2027, 6)).label == "2026-12..2027-11"
    assert year_of(date(2026, 1, 1), Period(2026, 12)).label == "2026-01..2026-12"
    assert year_of(date(2026, 1, 1), Period(2026, 12)).is_last(Period(2026, 12))


@settings(max_examples=200, deadline=None)
@given(
    effective_from=st.dates(date(2000, 1, 1), date(2099, 12, 31)),
    months=st.integers(0, 12 * 50),
)
def test_every_period_lies_in_exactly_one_year_whose_12th_period_is_its_last(
    effective_from: date, months: int
) -> None:
    start = Period(effective_from.year, effective_from.month)
    period = start
    for _ in range(months):
        period = period.next()
    year = year_of(effective_from, period)
    assert period in year.periods
    assert len(set(year.periods)) == 12
    assert year.number == months // 12 + 1
    assert year.is_last(period) is (months % 12 == 11)
    assert contract_year(effective_from, start.previous()) is None


# --- spend and shortfall ------------------------------------------------------------------------


def test_spend_leaves_service_credits_out() -> None:
    # Billed 9,180.00 after credits of -1,000.00: the committed spend is 10,180.00.
    assert f"{spend(Decimal('9180.00'), Decimal('-1000.00')):f}" == "10180.00"
    assert f"{spend(Decimal('9180.00'), Decimal('0.00')):f}" == "9180.00"


@pytest.mark.parametrize(
    "spends",
    [
        [Decimal("400000.00")],  # exactly met
        [Decimal("33333.34")] * 12,  # 400000.08: exceeded
        [Decimal("500000.00"), Decimal("-100000.00")],  # a credit note counts against spend
    ],
)
def test_no_shortfall_when_the_minimum_is_met_or_exceeded(spends: list[Decimal]) -> None:
    assert shortfall(Decimal("400000.00"), spends, "USD") is None


def test_the_shortfall_is_exact_to_the_cent() -> None:
    twelve = {Period(2026, month): Decimal("33333.33") for month in range(1, 13)}  # 399999.96
    missing = shortfall(Decimal("400000.00"), twelve, "USD")
    assert missing is not None and f"{missing:f}" == "0.04"
    missing = shortfall(Decimal("400000.00"), list(twelve.values()), "USD")
    assert missing is not None and f"{missing:f}" == "0.04"
    nothing_billed = shortfall(Decimal("400000.00"), {}, "USD")
    assert nothing_billed is not None and f"{nothing_billed:f}" == "400000.00"


def test_the_shortfall_in_a_currency_without_minor_units() -> None:
    missing = shortfall(Decimal("1200000"), [Decimal("99999")] * 12, "JPY")
    assert missing is not None and f"{missing:f}" == "12"
