"""The pure close decision (services/billing/close_decision.py): what a close records and
invoices, on counts given by hand (SPEC §6, worked examples and late items)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.billing.close_decision import (
    Close,
    ClosedPeriod,
    PeriodCounts,
    decide_close,
    late_ranges,
)
from shared.contracts.invoice import Invoice
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.attainment import LevelCount
from shared.domain.periods import parse_period, period_bounds
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED, ClassCount
from tests.spec_example import spec_body

OCTOBER = parse_period("2026-10")
NOW = datetime(2026, 11, 4, 4, 0, 5, tzinfo=UTC)


def doc(invoice: Invoice | None) -> dict[str, Any]:
    """The invoice as its JSON document (what the API and the CloudEvent carry)."""
    assert invoice is not None
    return invoice.model_dump(mode="json")


def acme(**changes: object) -> Agreement:
    return parse_agreement({**spec_body("acme"), **changes}).with_version(3)


def count(line: str, complexity: str, items: int, *, late: int = 0) -> ClassCount:
    return ClassCount(line, complexity, items, items, 0, late)


EXAMPLE_1 = [count("customer_support", "basic", 600), count("data_entry", "standard", 150)]


def invoiced(period: str, total: str, settled: int = 0) -> ClosedPeriod:
    return ClosedPeriod(period, f"acme-{period}-1", 750, Decimal(total), settled)


def decide(
    *,
    agreement: Agreement | None = None,
    no_agreement: bool = False,
    counts: list[ClassCount] = EXAMPLE_1,
    closed: Mapping[str, ClosedPeriod] | None = None,
    late_counts: Mapping[str, list[ClassCount]] | None = None,
) -> Close | None:
    return decide_close(
        client_id="acme",
        period=OCTOBER,
        agreement=None if no_agreement else agreement or acme(),
        ledger=PeriodCounts(counts),
        closed=closed or {},
        late_ledger={key: PeriodCounts(c) for key, c in (late_counts or {}).items()},
        now=NOW,
    )


def test_a_period_is_invoiced_as_spec_example_1() -> None:
    close = decide()
    assert close is not None and close.invoice is not None
    assert doc(close.invoice)["total"] == "10000.00"
    assert doc(close.invoice)["invoice_id"] == "acme-2026-10-1"
    assert (close.tier_name, close.tier_reason) == ("Essential", "volume")
    assert (close.items, close.billed_total, close.agreement_version) == (
        750,
        Decimal("10000.00"),
        3,
    )
    assert close.rerates == ()


def test_unclassified_items_are_neither_counted_nor_billed() -> None:
    close = decide(counts=[*EXAMPLE_1, count(UNCLASSIFIED, NO_COMPLEXITY, 40)])
    assert close is not None and close.invoice is not None
    assert close.items == 750
    assert doc(close.invoice)["total"] == "10000.00"


def test_without_an_agreement_usage_is_closed_unbilled() -> None:
    close = decide(no_agreement=True)
    assert close is not None
    assert (close.items, close.invoice, close.billed_total) == (750, None, None)


def test_an_agreement_not_yet_in_force_leaves_the_period_unbilled() -> None:
    close = decide(agreement=acme(effective_from="2026-11-01"))
    assert close is not None and close.invoice is None and close.items == 750


def test_no_agreement_and_no_usage_records_nothing() -> None:
    assert decide(no_agreement=True, counts=[]) is None


def test_an_agreement_and_no_items_owes_the_first_tiers_fee() -> None:
    close = decide(counts=[])
    assert close is not None and close.invoice is not None
    assert doc(close.invoice)["total"] == "10000.00"


def test_only_periods_with_more_late_items_than_settled_are_rerated_in_period_order() -> None:
    closed = {
        "2026-07": invoiced("2026-07", "10000.00", settled=0),
        "2026-08": invoiced("2026-08", "10000.00", settled=5),
        "2026-09": invoiced("2026-09", "10000.00", settled=0),
    }
    # September: 3 complex accounting items arrived late (example 2: +180.00 out of scope).
    # August: its 5 late items were settled already; nothing new.
    late_counts = {
        "2026-09": [*EXAMPLE_1, count("accounting", "complex", 3, late=3)],
        "2026-08": [*EXAMPLE_1, count("hr", "basic", 5, late=5)],
        "2026-07": [*EXAMPLE_1, count("accounting", "complex", 12, late=12)],
    }
    close = decide(closed=closed, late_counts=late_counts)
    assert close is not None and close.invoice is not None
    adjustments = [
        line for line in doc(close.invoice)["lines"] if line["kind"] == "late_adjustment"
    ]
    assert [(a["period"], a["amount"]) for a in adjustments] == [
        ("2026-07", "80000.00"),  # example 3: Enterprise by scope, 90000.00 in all
        ("2026-09", "180.00"),
    ]
    assert [(r.period, r.billed_total, r.late_items_settled) for r in close.rerates] == [
        ("2026-07", Decimal("90000.00"), 12),
        ("2026-09", Decimal("10180.00"), 3),
    ]
    assert doc(close.invoice)["total"] == "90180.00"


def test_late_ranges_are_the_invoiced_periods_in_the_agreements_zone() -> None:
    closed = {
        "2026-09": invoiced("2026-09", "1.00", settled=2),
        "2026-08": ClosedPeriod("2026-08", None, 4, None, 0),  # unbilled: never re-rated
        "2026-07": invoiced("2026-07", "1.00"),
    }
    ranges = late_ranges(closed, "America/New_York")
    assert [(r.period, r.settled) for r in ranges] == [("2026-07", 0), ("2026-09", 2)]
    assert (ranges[1].start, ranges[1].end) == period_bounds(
        parse_period("2026-09"), "America/New_York"
    )


# --- service credits and the commitment (SPEC §11) ---------------------------------------------

YEAR_FROM_NOVEMBER = {"effective_from": "2025-11-01", "commitment": {"annual_minimum": "250000.00"}}
CARE_LEVEL = {
    "at_risk_percent": "10",
    "levels": [
        {"id": "care", "service_line": "customer_support", "within_hours": 4,
         "target_percent": "90", "pool_percent": "50"},
    ],
}  # fmt: skip


def year_closed(**billed: tuple[str, str]) -> dict[str, ClosedPeriod]:
    """2025-11 .. 2026-09 invoiced at 10000.00 without credits, but for the periods given as
    (billed_total, credits)."""
    closed = {}
    period = parse_period("2025-11")
    while period < OCTOBER:
        total, credits = billed.get(period.key.replace("-", "_"), ("10000.00", "0"))
        closed[period.key] = ClosedPeriod(
            period.key, f"acme-{period.key}-1", 750, Decimal(total), 0, Decimal(credits)
        )
        period = period.next()
    return closed


def test_a_missed_level_credits_its_pool_share_on_the_invoice() -> None:
    close = decide_close(
        client_id="acme",
        period=OCTOBER,
        agreement=acme(service_levels=CARE_LEVEL),
        ledger=PeriodCounts(EXAMPLE_1, [LevelCount(10, 8)]),
        closed={},
        late_ledger={},
        now=NOW,
    )
    assert close is not None
    invoice = doc(close.invoice)
    # 8/10 = 80 % < 90: −(10000.00 × 10 % × 50 %) = −500.00
    assert [(line["kind"], line["amount"]) for line in invoice["lines"]] == [
        ("tier_fee", "10000.00"),
        ("service_credit", "-500.00"),
    ]
    assert invoice["lines"][1]["service_level"] == "care"
    assert invoice["total"] == "9500.00"
    assert invoice["service_levels"] == [
        {"id": "care", "measured": 10, "met": 8, "attainment_percent": "80.00",
         "target_percent": "90", "missed": True}
    ]  # fmt: skip
    assert (close.billed_total, close.credits) == (Decimal("9500.00"), Decimal("-500.00"))


def test_the_twelfth_period_trues_up_the_year_without_credits() -> None:
    # September billed 9400.00 of which −600.00 credits: its spend is 10000.00. August is
    # re-rated on this very invoice to 90000.00 (12 complex accounting: Enterprise by scope),
    # which counts toward August. 9 × 10000 + 90000 + 10000 + October's 10000 = 200000.00.
    closed = year_closed(**{"2026_09": ("9400.00", "-600.00")})
    august = [*EXAMPLE_1, count("accounting", "complex", 12, late=12)]
    close = decide_close(
        client_id="acme",
        period=OCTOBER,
        agreement=acme(**YEAR_FROM_NOVEMBER),
        ledger=PeriodCounts(EXAMPLE_1),
        closed=closed,
        late_ledger={"2026-08": PeriodCounts(august)},
        now=NOW,
    )
    assert close is not None
    invoice = doc(close.invoice)
    assert [(line["kind"], line.get("period"), line["amount"]) for line in invoice["lines"]] == [
        ("tier_fee", None, "10000.00"),
        ("late_adjustment", "2026-08", "80000.00"),
        ("commitment_true_up", None, "50000.00"),
    ]
    assert invoice["total"] == "140000.00"
    true_up = invoice["lines"][2]
    assert (true_up["quantity"], true_up["unit_price"]) == ("1", "50000.00")
    assert "2025-11..2026-10" in true_up["description"]
    # The true-up is not part of what is billed for October (SPEC §6).
    assert close.billed_total == Decimal("10000.00")


def test_no_true_up_before_the_twelfth_period_or_when_the_minimum_is_met() -> None:
    eleventh = decide_close(
        client_id="acme",
        period=OCTOBER,
        agreement=acme(effective_from="2025-12-01", commitment={"annual_minimum": "250000.00"}),
        ledger=PeriodCounts(EXAMPLE_1),
        closed={},
        late_ledger={},
        now=NOW,
    )
    met = decide_close(
        client_id="acme",
        period=OCTOBER,
        agreement=acme(effective_from="2025-11-01", commitment={"annual_minimum": "120000.00"}),
        ledger=PeriodCounts(EXAMPLE_1),
        closed=year_closed(),
        late_ledger={},
        now=NOW,
    )
    for close in (eleventh, met):
        assert close is not None
        assert [line["kind"] for line in doc(close.invoice)["lines"]] == ["tier_fee"]
