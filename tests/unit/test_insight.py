"""SPEC §8 insight: the forecast and the recommendations (pure), and their HTTP routes over a fake
pool. Every expected figure is worked out by hand in the comments, on the §3 agreement:

    Essential    up_to 1000   fee 10000.00  scope data_entry, customer_support: basic, standard
    Professional up_to 5000   fee 35000.00  scope data_entry, customer_support, it_support: all;
                                                  accounting, hr, procurement: basic, standard
    Enterprise   up_to 15000  fee 90000.00  scope all
    weights basic 1, standard 2, complex 5; data_entry weighs units; min_items 10;
    out_of_scope_rate 12.00; overage_rate 7.50
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from services.billing import insight, insight_api
from services.billing.deps import clock, database
from services.billing.insight import Billed, BilledPeriod
from shared.domain.agreement.agreement import Agreement, load_agreement_yaml, parse_agreement
from shared.domain.agreement.fields import Complexity, ServiceClass, ServiceLine
from shared.domain.attainment import LevelCount
from shared.domain.periods import Period, period_of
from shared.domain.rating import ClassUsage
from shared.infra.auth import KeyRing
from shared.ledger.reads import ClassCount
from tests.asgi import asgi_client
from tests.spec_example import SPEC_YAML, spec_body

ACME = load_agreement_yaml(SPEC_YAML).with_version(3)
NEW_YORK = ZoneInfo("America/New_York")
JUNE = Period(2026, 6)  # 30 days, no DST change: 2026-06-01T04:00Z .. 2026-07-01T04:00Z


def count(
    line: str, complexity: str, items: int, units: int | None = None, late: int = 0
) -> ClassCount:
    return ClassCount(line, complexity, items, items if units is None else units, 0, late)


def usage(line: ServiceLine, complexity: Complexity, items: int) -> ClassUsage:
    return ClassUsage(ServiceClass(line, complexity), items, items)


def new_york(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def forecast(
    agreement: Agreement, period: Period, counts: Sequence[ClassCount], now: datetime
) -> dict[str, Any]:
    """The forecast as the wire carries it."""
    return insight.forecast(agreement, period, counts, now).model_dump(mode="json")


def recommendations(agreement: Agreement, history: Sequence[BilledPeriod]) -> dict[str, Any]:
    """The recommendations as the wire carries them."""
    return insight.recommendations(agreement, history).model_dump(mode="json")


ESSENTIAL_FEE_LINE = {
    "kind": "tier_fee",
    "description": "Essential tier (volume)",
    "quantity": "1",
    "unit_price": "10000.00",
    "amount": "10000.00",
}


# --- forecast -----------------------------------------------------------------------------------


def test_halfway_through_the_month_doubles_the_counts() -> None:
    # 15 of June's 30 days have passed: factor 2. data_entry weighs units (100 -> 200, × 2).
    # So far W = 300×1 + 100×2 = 500; projected W = 600×1 + 200×2 = 1000: still Essential,
    # exactly at its up_to. The unclassified count is no usage.
    counts = [
        count("customer_support", "basic", 300),
        count("data_entry", "standard", 75, units=100),
        count("unclassified", "none", 7),
    ]
    assert forecast(ACME, JUNE, counts, new_york(2026, 6, 16)) == {
        "client_id": "acme",
        "period": "2026-06",
        "currency": "USD",
        "as_of": "2026-06-16T04:00:00Z",
        "elapsed_fraction": "0.5000",
        "so_far": {
            "items": 375,
            "weighted_units": "500",
            "tier": {"name": "Essential", "reason": "volume"},
            "total": "10000.00",
        },
        "projected": {
            "items": 750,
            "weighted_units": "1000",
            "tier": {"name": "Essential", "reason": "volume"},
            "total": "10000.00",
            "lines": [ESSENTIAL_FEE_LINE],
        },
        "by_class": [
            {"service_line": "data_entry", "complexity": "standard", "items": 75,
             "projected_items": 150, "weighted_units": "200", "projected_weighted_units": "400"},
            {"service_line": "customer_support", "complexity": "basic", "items": 300,
             "projected_items": 600, "weighted_units": "300", "projected_weighted_units": "600"},
        ],
    }  # fmt: skip


def test_the_projection_crosses_into_the_next_tier() -> None:
    # 12 of 30 days: fraction 0.4, factor 2.5, rounded half-up per class:
    # 301 -> 752.5 -> 753 basic customer_support; 101 -> 252.5 -> 253 standard data_entry.
    # So far W = 301 + 2×101 = 503 (Essential); projected W = 753 + 2×253 = 1259 > 1000:
    # Professional by volume, 35000.00.
    counts = [count("customer_support", "basic", 301), count("data_entry", "standard", 101)]
    result = forecast(ACME, JUNE, counts, new_york(2026, 6, 13))
    assert result["elapsed_fraction"] == "0.4000"
    assert result["so_far"] == {
        "items": 402,
        "weighted_units": "503",
        "tier": {"name": "Essential", "reason": "volume"},
        "total": "10000.00",
    }
    assert result["projected"] == {
        "items": 1006,
        "weighted_units": "1259",
        "tier": {"name": "Professional", "reason": "volume"},
        "total": "35000.00",
        "lines": [
            {"kind": "tier_fee", "description": "Professional tier (volume)", "quantity": "1",
             "unit_price": "35000.00", "amount": "35000.00"},
        ],
    }  # fmt: skip
    assert [(c["projected_items"], c["projected_weighted_units"]) for c in result["by_class"]] == [
        (253, "506"),
        (753, "753"),
    ]


def test_a_projected_scope_upgrade_and_an_unrounded_fraction() -> None:
    # 14 of 30 days: 14/30 = 0.46666… -> "0.4667"; factor 15/7. 7 complex accounting items
    # (under min_items 10) become 15: scope moves the projection to Enterprise.
    counts = [count("customer_support", "basic", 140), count("accounting", "complex", 7)]
    result = forecast(ACME, JUNE, counts, new_york(2026, 6, 15))
    assert result["elapsed_fraction"] == "0.4667"
    # So far: W = 140 + 35 = 175, Essential, plus out_of_scope 35 × 12.00 = 420.00.
    assert result["so_far"]["total"] == "10420.00"
    # Projected: 300 + 15×5 = 375 weighted units; accounting/complex 15 >= 10 -> Enterprise.
    assert result["projected"]["weighted_units"] == "375"
    assert result["projected"]["tier"] == {"name": "Enterprise", "reason": "scope"}
    assert result["projected"]["total"] == "90000.00"


def test_elapsed_time_is_measured_on_utc_instants_across_dst() -> None:
    # November 2026 in New York: 2026-11-01T04:00Z .. 2026-12-01T05:00Z is 721 hours (the
    # clocks go back on the 1st). At 2026-11-16T00:00-05:00, 361 hours have passed:
    # 361/721 = 0.50069… (the wall clock would say 15/30 = 0.5). 361 items project to
    # 361 × 721/361 = 721.
    counts = [count("customer_support", "basic", 361)]
    result = forecast(ACME, Period(2026, 11), counts, new_york(2026, 11, 16))
    assert result["elapsed_fraction"] == "0.5007"
    assert result["as_of"] == "2026-11-16T05:00:00Z"
    assert result["projected"]["items"] == 721


def test_at_the_period_start_the_projection_is_the_floor() -> None:
    result = forecast(ACME, JUNE, [], new_york(2026, 6, 1))
    floor = {
        "items": 0,
        "weighted_units": "0",
        "tier": {"name": "Essential", "reason": "volume"},
        "total": "10000.00",
    }
    assert result["elapsed_fraction"] == "0.0000"
    assert result["so_far"] == floor
    assert result["projected"] == {**floor, "lines": [ESSENTIAL_FEE_LINE]}
    assert result["by_class"] == []


def test_too_little_elapsed_time_is_not_extrapolated() -> None:
    # 30 minutes in: a factor of 1440 would be noise, so the projection is the usage so far.
    counts = [count("customer_support", "basic", 50)]
    result = forecast(ACME, JUNE, counts, new_york(2026, 6, 1, 0, 30))
    assert result["elapsed_fraction"] == "0.0007"
    assert result["projected"]["items"] == result["so_far"]["items"] == 50
    assert result["by_class"][0]["projected_items"] == 50
    # One hour in, it is: 50 × 720 = 36000 weighted units -> Enterprise with overage
    # (36000 - 15000) × 7.50 = 157500.00 -> 247500.00.
    result = forecast(ACME, JUNE, counts, new_york(2026, 6, 1, 1))
    assert result["projected"]["items"] == 36000
    assert result["projected"]["total"] == "247500.00"


def test_before_and_after_the_period_the_projection_is_the_usage() -> None:
    counts = [count("customer_support", "basic", 900)]
    before = forecast(ACME, JUNE, counts, new_york(2026, 5, 20))
    after = forecast(ACME, JUNE, counts, new_york(2026, 7, 3))
    assert (before["elapsed_fraction"], after["elapsed_fraction"]) == ("0.0000", "1.0000")
    for result in (before, after):
        assert result["projected"]["weighted_units"] == "900"
        assert result["projected"]["total"] == "10000.00"


def test_forecast_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast(ACME, JUNE, [], datetime(2026, 6, 16))


# --- forecast: service levels and the commitment (SPEC §11) ---------------------------------------

#: Customer care within 4 elapsed hours for 90 % of items (40 % of a pool of 10 % of the tier
#: fee: a miss credits 4 % of it), accounting within 24 hours for 95 % (60 %: 6 %).
SERVICE_LEVELS: dict[str, Any] = {
    "at_risk_percent": "10",
    "levels": [
        {"id": "care-turnaround", "service_line": "customer_support", "within_hours": 4,
         "target_percent": "90", "pool_percent": "40"},
        {"id": "ap-turnaround", "service_line": "accounting", "within_hours": 24,
         "target_percent": "95", "pool_percent": "60"},
    ],
}  # fmt: skip
#: ACME (effective 2026-01-01: contract years are calendar years) with service levels.
ACME_SL = parse_agreement({**spec_body(), "service_levels": SERVICE_LEVELS}).with_version(3)
#: ... and an annual minimum of 400000.00.
ACME_COMMITTED = parse_agreement(
    {**spec_body(), "service_levels": SERVICE_LEVELS, "commitment": {"annual_minimum": "400000"}}
).with_version(3)
#: Care measured 200 items and 170 met it: 85.00 % < 90, missed. Accounting measured nothing.
CARE_MISSED = [LevelCount(200, 170), LevelCount(0, 0)]


def test_a_missed_level_is_credited_on_the_projected_tiers_fee() -> None:
    # 12 of 30 days, as above: so far W 503 (Essential), projected W 1259 (Professional).
    # The attainment stays 85 %: so far the credit is 10000 × 10 % × 40 % = 400.00, projected
    # 35000 × 10 % × 40 % = 1400.00.
    counts = [count("customer_support", "basic", 301), count("data_entry", "standard", 101)]
    result = insight.forecast(ACME_SL, JUNE, counts, new_york(2026, 6, 13), CARE_MISSED)
    body = result.model_dump(mode="json")
    assert body["so_far"]["total"] == "9600.00"
    assert body["projected"]["total"] == "33600.00"
    assert body["projected"]["lines"] == [
        {"kind": "tier_fee", "description": "Professional tier (volume)", "quantity": "1",
         "unit_price": "35000.00", "amount": "35000.00"},
        {"kind": "service_credit",
         "description": "Service credit: care-turnaround attained 85.00% against 90%",
         "service_level": "care-turnaround", "quantity": "1", "unit_price": "-1400.00",
         "amount": "-1400.00"},
    ]  # fmt: skip
    assert body["service_levels"] == [
        {"id": "care-turnaround", "measured": 200, "met": 170, "attainment_percent": "85.00",
         "target_percent": "90", "missed": True},
        {"id": "ap-turnaround", "measured": 0, "met": 0, "attainment_percent": None,
         "target_percent": "95", "missed": False},
    ]  # fmt: skip
    assert "commitment" not in body  # the agreement has none


def test_without_service_levels_the_forecast_has_no_report() -> None:
    body = forecast(ACME, JUNE, [count("customer_support", "basic", 300)], new_york(2026, 6, 16))
    assert "service_levels" not in body
    assert "commitment" not in body


def test_service_level_counts_are_required_exactly_with_service_levels() -> None:
    with pytest.raises(ValueError, match="with their counts"):
        insight.forecast(ACME_SL, JUNE, [], new_york(2026, 6, 16))
    with pytest.raises(ValueError, match="without service levels"):
        insight.forecast(ACME, JUNE, [], new_york(2026, 6, 16), CARE_MISSED)


#: January .. May 2026 as billing.closed_periods holds them: February was billed 86400.00 of
#: which -3600.00 credits (spend 90000.00); April was closed unbilled (it counts nothing).
CLOSED = {
    "2026-01": Billed(Decimal("10000.00")),
    "2026-02": Billed(Decimal("86400.00"), Decimal("-3600.00")),
    "2026-03": Billed(Decimal("35000.00")),
    "2026-04": Billed(None),
    "2026-05": Billed(Decimal("10180.00")),
}


def test_the_year_is_projected_from_its_closed_periods_and_this_one() -> None:
    # Halfway through June: 300 care items project to 600, Essential 10000.00 less the care
    # credit 400.00 = 9600.00; spend leaves the credit out: 10000.00.
    # Closed so far: 10000 + 90000 + 35000 + 0 + 10180 = 145180.00 over 5 periods.
    # July .. December (6 periods) are projected like June: 145180 + 7 × 10000 = 215180.00,
    # 184820.00 short of 400000.00.
    counts = [count("customer_support", "basic", 300)]
    result = insight.forecast(
        ACME_COMMITTED, JUNE, counts, new_york(2026, 6, 16), CARE_MISSED, CLOSED
    )
    body = result.model_dump(mode="json")
    assert body["projected"]["total"] == "9600.00"
    assert body["commitment"] == {
        "annual_minimum": "400000.00",
        "year": "2026-01..2026-12",
        "year_end_period": "2026-12",
        "spend_so_far": "145180.00",
        "closed_periods": 5,
        "period_spend": "10000.00",
        "remaining_periods": 6,
        "projected_spend": "215180.00",
        "projected_true_up": "184820.00",
    }


def test_a_year_projected_above_its_minimum_trues_up_nothing() -> None:
    # 12 of 30 days: June projects to Professional, 35000.00 less 1400.00 credits; spend
    # 35000.00. Nothing is closed yet, so all 11 other periods of the year (January .. May
    # too: an earlier period still open counts like this one) project to 35000.00:
    # 12 × 35000 = 420000.00 >= 400000.00.
    counts = [count("customer_support", "basic", 301), count("data_entry", "standard", 101)]
    result = insight.forecast(ACME_COMMITTED, JUNE, counts, new_york(2026, 6, 13), CARE_MISSED, {})
    assert result.model_dump(mode="json")["commitment"] == {
        "annual_minimum": "400000.00",
        "year": "2026-01..2026-12",
        "year_end_period": "2026-12",
        "spend_so_far": "0.00",
        "closed_periods": 0,
        "period_spend": "35000.00",
        "remaining_periods": 11,
        "projected_spend": "420000.00",
        "projected_true_up": "0.00",
    }


def test_a_commitment_is_forecast_with_the_closed_periods() -> None:
    with pytest.raises(ValueError, match="closed periods"):
        insight.forecast(ACME_COMMITTED, JUNE, [], new_york(2026, 6, 16), CARE_MISSED)


# --- recommendations ----------------------------------------------------------------------------

BASE = [usage("customer_support", "basic", 600), usage("data_entry", "standard", 150)]
#: January: W 900, Essential by volume, 10000.00.
#: February: + 12 complex accounting (W 960): scope -> Enterprise, 90000.00.
#: March: 700 basic customer_support + 20 basic it_support (W 720): scope -> Professional,
#: 35000.00. Re-rated history: 10000 + 90000 + 35000 = 135000.00.
HISTORY: list[BilledPeriod] = [
    (Period(2026, 3), [usage("customer_support", "basic", 700), usage("it_support", "basic", 20)],
     "Professional", "scope"),
    (Period(2026, 1), BASE, "Essential", "volume"),
    (Period(2026, 2), [*BASE, usage("accounting", "complex", 12)], "Enterprise", "scope"),
]  # fmt: skip


def options_by(result: dict[str, Any], change: str) -> list[dict[str, Any]]:
    return [option for option in result["options"] if option["change"] == change]


def test_scope_share_and_the_cost_of_each_tier() -> None:
    result = recommendations(ACME, HISTORY)
    assert result["client_id"] == "acme"
    assert result["currency"] == "USD"
    assert result["scope_share"] == {"count": 2, "periods": 3, "fraction": "0.6667"}
    assert [p["period"] for p in result["periods"]] == ["2026-01", "2026-02", "2026-03"]
    # February in Essential: 10000 + accounting/complex 60 × 12.00 = 10720.00; in Professional
    # (accounting only basic, standard): 35000 + 720 = 35720.00; Enterprise covers all.
    assert result["periods"][1] == {
        "period": "2026-02",
        "items": 762,
        "weighted_units": "960",
        "tier": {"name": "Enterprise", "reason": "scope"},
        "rated": {"tier": {"name": "Enterprise", "reason": "scope"}, "total": "90000.00"},
        "by_tier": [
            {"tier": "Essential", "total": "10720.00", "fits_volume": True},
            {"tier": "Professional", "total": "35720.00", "fits_volume": True},
            {"tier": "Enterprise", "total": "90000.00", "fits_volume": True},
        ],
    }
    # March in Essential: 10000 + it_support/basic 20 × 12.00 = 10240.00.
    assert [t["total"] for t in result["periods"][2]["by_tier"]] == [
        "10240.00",
        "35000.00",
        "90000.00",
    ]


def test_a_higher_min_items_stops_the_scope_upgrades() -> None:
    # The upgrades were forced by 12 accounting/complex and 20 it_support/basic items: at
    # min_items 21 neither counts, every period stays in Essential and pays out of scope:
    # 10000 + 10720 + 10240 = 30960.00, a saving of 135000 - 30960 = 104040.00.
    [option] = options_by(recommendations(ACME, HISTORY), "min_items")
    assert option == {
        "change": "min_items",
        "description": "Raise min_items from 10 to 21: no class seen would upgrade the tier by "
        "scope; its items are charged out of scope instead",
        "details": {"min_items": 21, "current": 10},
        "total_before": "135000.00",
        "total_after": "30960.00",
        "saving": "104040.00",
    }


def test_moving_a_forcing_class_into_the_volume_tiers_scope() -> None:
    result = recommendations(ACME, HISTORY)
    scope = options_by(result, "scope")
    summary = [
        ([(c["service_line"], c["complexity"], c["tier"]) for c in o["details"]["classes"]],
         o["total_after"], o["saving"])
        for o in scope
    ]  # fmt: skip
    assert summary == [
        # Both classes in Essential: all three periods at 10000.00 -> 30000.00.
        (
            [("accounting", "complex", "Essential"), ("it_support", "basic", "Essential")],
            "30000.00",
            "105000.00",
        ),
        # accounting/complex only: February drops to 10000 -> 10000 + 10000 + 35000.
        ([("accounting", "complex", "Essential")], "55000.00", "80000.00"),
        # it_support/basic only: March drops to 10000 -> 10000 + 90000 + 10000.
        ([("it_support", "basic", "Essential")], "110000.00", "25000.00"),
    ]
    assert scope[0]["description"] == (
        "Move accounting/complex into the Essential tier's scope and it_support/basic into the "
        "Essential tier's scope, so they no longer force a higher tier"
    )
    assert result["cheapest"] == scope[0]


def test_options_are_sorted_by_saving() -> None:
    # Surcharge mode and committing to Essential both give 30960.00 here, like min_items 21;
    # ties keep the order min_items, scope, mode, tier.
    result = recommendations(ACME, HISTORY)
    assert [(o["change"], o["saving"]) for o in result["options"]] == [
        ("scope", "105000.00"),
        ("min_items", "104040.00"),
        ("mode", "104040.00"),
        ("tier", "104040.00"),
        ("scope", "80000.00"),
        ("scope", "25000.00"),
    ]
    assert options_by(result, "mode")[0]["details"] == {"mode": "surcharge", "current": "upgrade"}
    assert options_by(result, "tier")[0]["details"] == {"tier": "Essential"}


def test_nothing_saves_money_so_there_is_no_cheapest() -> None:
    # No upgrades: 900 W in Essential; 3 complex accounting (under min_items) are charged out of
    # scope, 15 × 12.00 = 180.00 -> 10180.00; 4000 W of it_support is Professional by volume.
    history: list[BilledPeriod] = [
        (Period(2026, 1), BASE, "Essential", "volume"),
        (Period(2026, 2), [*BASE, usage("accounting", "complex", 3)], "Essential", "volume"),
        (Period(2026, 3), [usage("it_support", "standard", 2000)], "Professional", "volume"),
    ]
    result = recommendations(ACME, history)
    assert result["scope_share"] == {"count": 0, "periods": 3, "fraction": "0.0000"}
    # Committing to a tier must hold March's volume: Professional at best,
    # 35000 × 2 + (35000 + 180) = 105180.00 against 10000 + 10180 + 35000 = 55180.00.
    assert [(o["change"], o["total_after"], o["saving"]) for o in result["options"]] == [
        ("mode", "55180.00", "0.00"),
        ("tier", "105180.00", "-50000.00"),
    ]
    assert result["cheapest"] is None


def test_no_closed_periods_no_options() -> None:
    result = recommendations(ACME, [])
    assert result == {
        "client_id": "acme",
        "currency": "USD",
        "scope_share": {"count": 0, "periods": 0, "fraction": "0.0000"},
        "periods": [],
        "options": [],
        "cheapest": None,
    }


# --- recommendations: the commitment (SPEC §11) ------------------------------------------------

#: ACME with an annual minimum of 400000.00 (and no service levels: rated totals have no
#: credits anyway).
ACME_MINIMUM = parse_agreement(
    {**spec_body(), "commitment": {"annual_minimum": "400000.00"}}
).with_version(3)


def test_the_commitment_eats_the_saving_under_its_minimum() -> None:
    # HISTORY is three periods of the year 2026 still running: their share of the minimum is
    # 400000 × 3 / 12 = 100000.00. As they stand they cost 135000.00, above it. Every change
    # that brings them under 100000.00 saves only down to it: 135000 - 100000 = 35000.00.
    # it_support/basic alone leaves 110000.00, above the minimum: its 25000.00 stands.
    result = recommendations(ACME_MINIMUM, HISTORY)
    assert [(o["change"], o["total_after"], o["saving"]) for o in result["options"]] == [
        ("min_items", "100000.00", "35000.00"),  # 30960.00 before the commitment
        ("scope", "100000.00", "35000.00"),  # accounting/complex: 55000.00
        ("scope", "100000.00", "35000.00"),  # both classes: 30000.00
        ("mode", "100000.00", "35000.00"),
        ("tier", "100000.00", "35000.00"),
        ("scope", "110000.00", "25000.00"),  # it_support/basic
    ]
    cheapest = result["cheapest"]
    assert cheapest == options_by(result, "min_items")[0]
    assert cheapest["description"] == (
        "Raise min_items from 10 to 21: no class seen would upgrade the tier by scope; its "
        "items are charged out of scope instead (it saves 104040.00 before the annual "
        "commitment, 35000.00 with it: its minimum is billed anyway)"
    )
    assert cheapest["total_before"] == "135000.00"
    assert cheapest["commitment"] == [
        {"year": "2026-01..2026-12", "periods": 3, "minimum": "100000.00",
         "spend_before": "135000.00", "spend_after": "30960.00",
         "cost_before": "135000.00", "cost_after": "100000.00"},
    ]  # fmt: skip
    it_support = options_by(result, "scope")[-1]
    assert it_support["description"].endswith("so it no longer forces a higher tier")


def test_a_complete_year_costs_at_least_its_annual_minimum() -> None:
    # February's usage (Enterprise by scope, 90000.00) every period of 2026 and in January
    # 2027. Raising min_items to 13 puts each in Essential with 60 × 12.00 out of scope:
    # 10720.00. 2026 is complete: 12 × 10720 = 128640.00 is under 400000.00, so it costs
    # 400000.00 (before: 12 × 90000 = 1080000.00). 2027 has one period compared: its share
    # 400000 / 12 = 33333.33 (half-up) is above 10720.00.
    # Before: 1080000 + 90000 = 1170000.00; after: 400000 + 33333.33 = 433333.33;
    # saving 736666.67 (1170000 - 12 × 10720 - 10720 = 1030640.00 without the commitment).
    february = [*BASE, usage("accounting", "complex", 12)]
    history: list[BilledPeriod] = [
        (period, february, "Enterprise", "scope")
        for period in [*(Period(2026, m) for m in range(1, 13)), Period(2027, 1)]
    ]
    result = recommendations(ACME_MINIMUM, history)
    [option] = options_by(result, "min_items")
    assert (option["total_before"], option["total_after"], option["saving"]) == (
        "1170000.00",
        "433333.33",
        "736666.67",
    )
    assert option["commitment"] == [
        {"year": "2026-01..2026-12", "periods": 12, "minimum": "400000.00",
         "spend_before": "1080000.00", "spend_after": "128640.00",
         "cost_before": "1080000.00", "cost_after": "400000.00"},
        {"year": "2027-01..2027-12", "periods": 1, "minimum": "33333.33",
         "spend_before": "90000.00", "spend_after": "10720.00",
         "cost_before": "90000.00", "cost_after": "33333.33"},
    ]  # fmt: skip
    assert "1030640.00 before the annual commitment, 736666.67 with it" in option["description"]


def test_a_change_the_commitment_does_not_touch_says_nothing_of_it() -> None:
    # A year far above its minimum: the saving is the rated one, and the description is the
    # usual one (the years are still shown).
    minimum = parse_agreement(
        {**spec_body(), "commitment": {"annual_minimum": "1.00"}}
    ).with_version(3)
    plain = {o["description"]: o["saving"] for o in recommendations(ACME, HISTORY)["options"]}
    result = recommendations(minimum, HISTORY)
    assert {o["description"]: o["saving"] for o in result["options"]} == plain
    assert all(len(o["commitment"]) == 1 for o in result["options"])


# --- HTTP ---------------------------------------------------------------------------------------

ADMIN = "admin-key-0123456789abcdef"
INTAKE = "zendesk-key-1"
NOW = datetime(2026, 6, 16, 4, tzinfo=UTC)  # halfway through June in New York


class FakePool:
    """Answers the queries billing's store and the ledger make, from plain data."""

    def __init__(
        self,
        agreement_body: dict[str, Any] | None,
        counts: dict[str, list[ClassCount]],
        closed: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.agreement_body = agreement_body
        self.counts = counts
        self.closed = list(closed)
        self.ranges: list[tuple[datetime, datetime]] = []

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert "billing.agreements" in query
        return self.agreement_body

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if "billing.closed_periods" in query:
            return self.closed
        if "unnest" in query:  # counts_for_ranges
            ranges = zip(*args[:4], strict=True)  # client ids, labels, starts, ends
            return [
                {"client_id": client_id, "label": label, **self._row(c)}
                for client_id, label, start, end in ranges
                for c in self._counts(start, end)
            ]
        _client_id, start, end, _unclassified = args  # counts_between
        return [self._row(c) for c in self._counts(start, end)]

    def _counts(self, start: datetime, end: datetime) -> list[ClassCount]:
        self.ranges.append((start, end))
        return self.counts.get(period_of(start, "America/New_York").key, [])

    @staticmethod
    def _row(c: ClassCount) -> dict[str, Any]:
        return {
            "service_line": c.service_line,
            "complexity": c.complexity,
            "items": c.items,
            "units": c.units,
            "handling_seconds": c.handling_seconds,
            "late_items": c.late_items,
        }


def closed_row(period: str, tier: str | None, reason: str | None) -> dict[str, Any]:
    invoice = f"acme-{period}-1" if tier else None
    return {"period": period, "tier_name": tier, "tier_reason": reason, "invoice_id": invoice}


@pytest.fixture
def pool() -> FakePool:
    counts = {
        "2026-01": [count("customer_support", "basic", 600), count("data_entry", "standard", 150)],
        "2026-02": [
            count("customer_support", "basic", 600),
            count("data_entry", "standard", 150),
            count("accounting", "complex", 12, late=2),  # late items count as they stand
        ],
        "2026-06": [count("customer_support", "basic", 300), count("unclassified", "none", 4)],
    }
    closed = [
        closed_row("2026-01", "Essential", "volume"),
        closed_row("2026-02", "Enterprise", "scope"),
        closed_row("2026-03", None, None),  # closed unbilled: not part of the history
    ]
    return FakePool(ACME.to_wire(), counts, closed)


@pytest.fixture
async def client(pool: FakePool) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.keys = KeyRing(admin_key=ADMIN, intake_keys={INTAKE: "zendesk"})
    app.include_router(insight_api.router)
    app.dependency_overrides[database] = lambda: pool
    app.dependency_overrides[clock] = lambda: NOW
    async with asgi_client(app, ADMIN) as http:
        yield http


async def test_forecast_route_reads_the_open_period(
    client: httpx.AsyncClient, pool: FakePool
) -> None:
    response = await client.get("/v1/forecast/acme")
    assert response.status_code == 200
    body = response.json()
    assert (body["period"], body["as_of"], body["elapsed_fraction"]) == (
        "2026-06",
        "2026-06-16T04:00:00Z",
        "0.5000",
    )
    assert body["projected"]["weighted_units"] == "600"
    # Counted over the month in the agreement's zone.
    start = datetime(2026, 6, 1, 4, tzinfo=UTC)
    assert pool.ranges == [(start, start + timedelta(days=30))]


async def test_forecast_route_takes_a_period(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/forecast/acme", params={"period": "2026-01"})
    assert response.status_code == 200
    body = response.json()
    assert (body["period"], body["elapsed_fraction"]) == ("2026-01", "1.0000")
    assert body["projected"]["total"] == "10000.00"


async def test_recommendations_route_uses_invoiced_periods(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/recommendations/acme")
    assert response.status_code == 200
    body = response.json()
    assert [p["period"] for p in body["periods"]] == ["2026-01", "2026-02"]
    assert body["scope_share"] == {"count": 1, "periods": 2, "fraction": "0.5000"}
    # min_items 13 keeps February in Essential with 720.00 out of scope: 90000 -> 10720.
    assert options_by(body, "min_items")[0]["saving"] == "79280.00"
    # accounting/complex in Essential's scope: February at 10000.00, the cheapest change.
    assert body["cheapest"]["change"] == "scope"
    assert body["cheapest"]["saving"] == "80000.00"


@pytest.mark.parametrize("path", ["/v1/forecast/acme", "/v1/recommendations/acme"])
async def test_routes_take_the_admin_key(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path, headers={"Authorization": ""})).status_code == 401
    intake = {"Authorization": f"Bearer {INTAKE}"}
    assert (await client.get(path, headers=intake)).status_code == 403


@pytest.mark.parametrize("path", ["/v1/forecast/nobody", "/v1/recommendations/nobody"])
async def test_unknown_client_is_404(client: httpx.AsyncClient, pool: FakePool, path: str) -> None:
    pool.agreement_body = None
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "no agreement for nobody"}


async def test_a_bad_period_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/forecast/acme", params={"period": "2026-13"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "period"]


async def test_a_period_before_the_agreement_is_404(
    client: httpx.AsyncClient, pool: FakePool
) -> None:
    pool.agreement_body = {**ACME.to_wire(), "effective_from": "2026-07-01"}
    response = await client.get("/v1/forecast/acme")
    assert response.status_code == 404
    assert "2026-06 is not billed" in response.json()["detail"]


def test_openapi_documents_the_service_levels_and_the_commitment() -> None:
    app = FastAPI()
    app.include_router(insight_api.router)
    document = app.openapi()
    schemas = document["components"]["schemas"]
    forecast_schema = schemas["Forecast"]
    # Optional: only for an agreement with service levels / a commitment.
    assert list(forecast_schema["properties"])[-2:] == ["service_levels", "commitment"]
    assert not {"service_levels", "commitment"} & set(forecast_schema["required"])
    assert set(schemas["ForecastCommitment"]["required"]) == {
        "annual_minimum", "year", "year_end_period", "spend_so_far", "closed_periods",
        "period_spend", "remaining_periods", "projected_spend", "projected_true_up",
    }  # fmt: skip
    assert "commitment" in schemas["Option"]["properties"]
    assert "commitment" not in schemas["Option"]["required"]
    assert set(schemas["YearCost"]["required"]) == {
        "year", "periods", "minimum", "spend_before", "spend_after", "cost_before", "cost_after",
    }  # fmt: skip
    paths = document["paths"]
    assert "projected_true_up" in paths["/v1/forecast/{client_id}"]["get"]["description"]
    assert (
        "annual_minimum × n ÷ 12" in paths["/v1/recommendations/{client_id}"]["get"]["description"]
    )
