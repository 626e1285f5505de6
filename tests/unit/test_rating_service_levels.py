"""Rating an agreement with service levels (SPEC §11, §13 "Invoice lines"): a missed level adds a
`service_credit` line after the out-of-scope and overage lines, in level order, and lowers the
total; `Rating.credits` is what the commitment leaves out of spend. And the true-up line."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.contracts.invoice import invoice_line
from shared.domain.agreement.agreement import load_agreement_yaml
from shared.domain.agreement.fields import Complexity, ServiceClass, ServiceLine
from shared.domain.attainment import LevelCount
from shared.domain.rating import ClassUsage, InvoiceLine, commitment_true_up_line, rate
from tests.spec_example import SPEC_TERMS_YAML, SPEC_YAML

ACME = load_agreement_yaml(SPEC_YAML + SPEC_TERMS_YAML)
PLAIN = load_agreement_yaml(SPEC_YAML)
MET = LevelCount(20, 20)
AP_MISSED = LevelCount(20, 18)  # 90 % against 95
CARE_MISSED = LevelCount(10, 8)  # 80 % against 90


def usage(line: ServiceLine, complexity: Complexity, items: int) -> ClassUsage:
    return ClassUsage(ServiceClass(line, complexity), items, items)


ESSENTIAL = [usage("customer_support", "basic", 600), usage("data_entry", "standard", 150)]
#: Essential with 3 complex accounting items: one out_of_scope line (15 × 12.00).
OUT_OF_SCOPE = [*ESSENTIAL, usage("accounting", "complex", 3)]
#: Enterprise and 1200 weighted units of overage (SPEC §6 example 4).
OVERAGE = [usage("it_support", "complex", 3240)]


def wire(lines: tuple[InvoiceLine, ...]) -> list[dict[str, Any]]:
    return [invoice_line(line, "USD").model_dump(mode="json") for line in lines]


def test_missed_levels_credit_after_out_of_scope_in_level_order() -> None:
    rating = rate(ACME, OUT_OF_SCOPE, [AP_MISSED, CARE_MISSED])
    assert [line.kind for line in rating.lines] == [
        "tier_fee",
        "out_of_scope",
        "service_credit",
        "service_credit",
    ]
    assert wire(rating.lines)[2:] == [
        {
            "kind": "service_credit",
            "description": "Service credit: ap-turnaround attained 90.00% against 95%",
            "service_level": "ap-turnaround",
            "quantity": "1",
            "unit_price": "-600.00",
            "amount": "-600.00",
        },
        {
            "kind": "service_credit",
            "description": "Service credit: care-turnaround attained 80.00% against 90%",
            "service_level": "care-turnaround",
            "quantity": "1",
            "unit_price": "-400.00",
            "amount": "-400.00",
        },
    ]
    assert f"{rating.total:f}" == "9180.00"  # 10000 + 180 - 600 - 400
    assert f"{rating.credits:f}" == "-1000.00"


def test_credits_follow_overage_and_draw_on_the_tier_rated() -> None:
    rating = rate(ACME, OVERAGE, [AP_MISSED, CARE_MISSED])
    assert [line.kind for line in rating.lines] == [
        "tier_fee",
        "overage",
        "service_credit",
        "service_credit",
    ]
    assert [f"{line.amount:f}" for line in rating.lines] == [
        "90000.00",
        "9000.00",
        "-5400.00",
        "-3600.00",
    ]
    assert f"{rating.total:f}" == "90000.00"
    assert f"{rating.credits:f}" == "-9000.00"


def test_only_missed_levels_credit() -> None:
    rating = rate(ACME, ESSENTIAL, [MET, CARE_MISSED])
    credits = [line for line in rating.lines if line.kind == "service_credit"]
    assert [line.service_level for line in credits] == ["care-turnaround"]
    assert f"{rating.total:f}" == "9600.00"
    nothing_measured = rate(ACME, ESSENTIAL, [LevelCount(0, 0), LevelCount(0, 0)])
    assert [line.kind for line in nothing_measured.lines] == ["tier_fee"]
    assert f"{nothing_measured.credits:f}" == "0.00"
    assert f"{nothing_measured.total:f}" == "10000.00"


def test_the_rating_carries_every_level_in_order() -> None:
    rating = rate(ACME, ESSENTIAL, [AP_MISSED, LevelCount(0, 0)])
    assert rating.service_levels is not None
    assert [r.to_wire() for r in rating.service_levels] == [
        {
            "id": "ap-turnaround",
            "measured": 20,
            "met": 18,
            "attainment_percent": "90.00",
            "target_percent": "95",
            "missed": True,
        },
        {
            "id": "care-turnaround",
            "measured": 0,
            "met": 0,
            "attainment_percent": None,
            "target_percent": "90",
            "missed": False,
        },
    ]
    assert rate(PLAIN, ESSENTIAL).service_levels is None


def test_a_true_up_joins_the_total_but_is_no_credit() -> None:
    rating = rate(ACME, ESSENTIAL, [AP_MISSED, CARE_MISSED]).with_lines(
        commitment_true_up_line("2026-01..2026-12", Decimal("1234.5"), "USD")
    )
    assert f"{rating.total:f}" == "10234.50"  # 10000 - 1000 + 1234.50
    assert f"{rating.credits:f}" == "-1000.00"  # the true-up is no credit


def test_levels_and_agreement_must_match() -> None:
    with pytest.raises(ValueError, match="with their counts"):
        rate(ACME, ESSENTIAL)
    with pytest.raises(ValueError, match="without service levels"):
        rate(PLAIN, ESSENTIAL, [MET])
    with pytest.raises(ValueError, match="1 counts for 2 levels"):
        rate(ACME, ESSENTIAL, [MET])


def test_an_agreement_without_service_levels_rates_as_before() -> None:
    rating = rate(PLAIN, OUT_OF_SCOPE)
    assert [line.kind for line in rating.lines] == ["tier_fee", "out_of_scope"]
    assert f"{rating.credits:f}" == "0.00"


def test_the_commitment_true_up_line() -> None:
    line = commitment_true_up_line("2026-03..2027-02", Decimal("0.04"), "USD")
    assert wire((line,)) == [
        {
            "kind": "commitment_true_up",
            "description": "Annual commitment true-up for the contract year 2026-03..2027-02",
            "quantity": "1",
            "unit_price": "0.04",
            "amount": "0.04",
        }
    ]
    yen = commitment_true_up_line("2026-01..2026-12", Decimal("1000"), "JPY")
    assert (f"{yen.unit_price:f}", f"{yen.amount:f}") == ("1000", "1000")
