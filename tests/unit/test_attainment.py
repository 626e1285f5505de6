"""Service-level attainment (shared/domain/attainment.py, SPEC §11/§13): the exact miss rule, the
two-decimal attainment, and what a miss credits — with SPEC §11's example agreement."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts.invoice import ServiceLevelReport
from shared.domain.agreement.agreement import load_agreement_yaml
from shared.domain.agreement.terms import ServiceLevel, ServiceLevels
from shared.domain.attainment import LevelCount, LevelResult, assess, credit
from tests.spec_example import SPEC_TERMS_YAML, SPEC_YAML

ACME = load_agreement_yaml(SPEC_YAML + SPEC_TERMS_YAML)
assert ACME.service_levels is not None
TERMS = ACME.service_levels
AP, CARE = TERMS.levels  # pool 60 and 40 of a 10 % pool


def level(target: str = "95", pool: str = "50", **changes: Any) -> ServiceLevel:
    return ServiceLevel.model_validate(
        {
            "id": "l",
            "service_line": "hr",
            "within_hours": 8,
            "target_percent": target,
            "pool_percent": pool,
            **changes,
        }
    )


def terms(at_risk: str, *levels: ServiceLevel) -> ServiceLevels:
    return ServiceLevels.model_validate(
        {"at_risk_percent": at_risk, "levels": [lv.to_wire() for lv in levels]}
    )


def result(measured: int, met: int, target: str = "95") -> LevelResult:
    return LevelResult(level(target), measured, met)


# --- the miss: met × 100 < target × measured, exactly --------------------------------------------


@pytest.mark.parametrize(
    ("target", "measured", "met", "missed"),
    [
        ("95", 20, 19, False),  # exactly 95 %: met, not missed
        ("95", 20, 18, True),
        ("95", 20, 20, False),
        ("90", 10, 9, False),
        ("90", 10, 8, True),
        ("100", 7, 7, False),
        ("100", 7, 6, True),
        ("0", 7, 0, False),
        # Rounded, 2/3 is 66.67 % and would meet a 66.67 % target; exactly, it falls short.
        ("66.67", 3, 2, True),
        ("66.666", 3, 2, False),
        ("99.9", 1000, 999, False),
        ("99.9", 10000, 9989, True),
    ],
)
def test_a_level_is_missed_when_met_times_100_is_below_target_times_measured(
    target: str, measured: int, met: int, missed: bool
) -> None:
    assert result(measured, met, target).missed is missed


@pytest.mark.parametrize("target", ["0", "50", "95", "100"])
def test_nothing_measured_is_never_missed_and_has_no_attainment(target: str) -> None:
    nothing = result(0, 0, target)
    assert nothing.missed is False
    assert nothing.attainment_percent is None
    assert nothing.to_wire()["attainment_percent"] is None


@settings(max_examples=200, deadline=None)
@given(
    measured=st.integers(0, 10**6),
    share=st.fractions(0, 1),
    target=st.decimals(0, 100, places=6, allow_nan=False, allow_infinity=False),
)
def test_the_miss_is_the_exact_comparison_of_met_over_measured_with_the_target(
    measured: int, share: Fraction, target: Decimal
) -> None:
    met = int(share * measured)
    missed = result(measured, met, f"{target:f}").missed
    assert missed is (measured > 0 and met * 100 < target * measured)


# --- attainment_percent: two decimals, half-up ----------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "met", "attainment"),
    [
        (3, 2, "66.67"),
        (8, 1, "12.50"),
        (3, 1, "33.33"),
        (800, 1, "0.13"),  # 0.125: half-up
        (1600, 1, "0.06"),  # 0.0625
        (16, 1, "6.25"),
        (20, 19, "95.00"),
        (20, 20, "100.00"),
        (5, 0, "0.00"),
        (7, 6, "85.71"),  # 85.714...
        (2000, 1999, "99.95"),
        (200000, 199999, "100.00"),  # 99.9995: half-up to 100.00, yet not "met" a 100 target
    ],
)
def test_attainment_is_two_decimals_half_up(measured: int, met: int, attainment: str) -> None:
    got = result(measured, met).attainment_percent
    assert got is not None
    assert f"{got:f}" == attainment
    assert result(measured, met).to_wire()["attainment_percent"] == attainment


def test_a_rounded_attainment_of_100_still_misses_a_100_target() -> None:
    almost = result(200000, 199999, "100")
    assert f"{almost.attainment_percent:f}" == "100.00"
    assert almost.missed


def test_the_report_entry_of_a_level() -> None:
    entry = LevelResult(AP, 20, 18).to_wire()
    assert entry == {
        "id": "ap-turnaround",
        "measured": 20,
        "met": 18,
        "attainment_percent": "90.00",
        "target_percent": "95",
        "missed": True,
    }
    assert ServiceLevelReport.of(LevelResult(AP, 20, 18)).model_dump(mode="json") == entry
    assert LevelResult(level("99.50"), 0, 0).to_wire()["target_percent"] == "99.5"


def test_counts_are_checked() -> None:
    for measured, met in [(3, 4), (3, -1), (-1, -1)]:
        with pytest.raises(ValueError, match="met"):
            LevelCount(measured, met)


def test_assess_pairs_every_level_with_its_count_in_order() -> None:
    ap, care = assess(TERMS, [LevelCount(20, 18), LevelCount(0, 0)])
    assert (ap.level.id, ap.measured, ap.met, ap.missed) == ("ap-turnaround", 20, 18, True)
    assert (care.level.id, care.measured, care.met, care.missed) == ("care-turnaround", 0, 0, False)
    with pytest.raises(ValueError, match="1 counts for 2 levels"):
        assess(TERMS, [LevelCount(1, 1)])


# --- the credit: −round_half_up(fee × at_risk ÷ 100 × pool ÷ 100) ---------------------------------


def test_spec_example_credits_on_the_essential_fee() -> None:
    # SPEC §11's agreement: 10 % of the tier fee at risk, shared 60/40 by its two levels.
    fee = Decimal("10000.00")
    assert f"{credit(TERMS, AP, fee, 'USD'):f}" == "-600.00"
    assert f"{credit(TERMS, CARE, fee, 'USD'):f}" == "-400.00"
    assert f"{credit(TERMS, AP, Decimal('90000.00'), 'USD'):f}" == "-5400.00"


@pytest.mark.parametrize(
    ("fee", "at_risk", "pool", "currency", "amount"),
    [
        # 1,000,100 × 10 % × 5 % = 5000.5 yen: half-up is 5001 (half-even would say 5000).
        ("1000100", "10", "5", "JPY", "-5001"),
        ("1000060", "10", "5", "JPY", "-5000"),  # 5000.3
        # 10,000.20 × 10 % × 25 % = 250.005 dollars: 250.01 (half-even: 250.00).
        ("10000.20", "10", "25", "USD", "-250.01"),
        ("10000.20", "10", "24.99", "USD", "-249.90"),  # 249.904998
        ("10000.00", "7.5", "33.333333", "USD", "-250.00"),  # 249.9999975
        ("10000.00", "12.5", "12.5", "USD", "-156.25"),
        ("10000.00", "10", "0", "USD", "0.00"),  # never -0.00
        ("10000.00", "0", "60", "USD", "0.00"),
        ("0.00", "10", "60", "USD", "0.00"),
        ("10000", "10", "100", "JPY", "-1000"),
    ],
)
def test_a_credit_is_the_positive_share_rounded_half_up_then_negated(
    fee: str, at_risk: str, pool: str, currency: str, amount: str
) -> None:
    one = level(pool=pool)
    got = credit(terms(at_risk, one), one, Decimal(fee), currency)
    assert f"{got:f}" == amount
    assert not (got.is_zero() and got.is_signed())
