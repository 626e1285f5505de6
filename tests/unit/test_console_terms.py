"""The console's view of an agreement's SPEC §11 terms (services/console/terms_view.py): each
service level's attainment and the credit a miss puts at stake at the tier the period is in, and
the contract year's committed spend against the annual minimum — on the client page's overview,
the operator's usage card, and the operator overview's service-level reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.console.business import LEVELS_TTL, LevelCache, _level_counts
from services.console.client_view import client_overview
from services.console.terms_view import (
    BilledPeriod,
    commitment_progress,
    service_levels_standing,
    tier_named,
)
from services.console.usage import OpenPeriod, client_usage
from shared.contracts.invoice import TierChoice
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.attainment import LevelCount
from shared.domain.periods import Period, period_bounds
from shared.domain.usage import ClassCount
from tests.spec_example import spec_agreement

#: SPEC §11's example sections on SPEC §3's agreement (effective 2026-01-15: the first contract
#: year is 2026-01..2026-12).
TERMS: dict[str, Any] = {
    "effective_from": "2026-01-15",
    "service_levels": {
        "at_risk_percent": "10",
        "calendar": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "hours": ["09:00", "18:00"],
            "holidays": ["2026-12-25"],
        },
        "levels": [
            {
                "id": "ap-turnaround",
                "service_line": "accounting",
                "complexity": ["basic", "standard"],
                "within_hours": 24,
                "clock": "business",
                "target_percent": "95",
                "pool_percent": "60",
            },
            {
                "id": "care-turnaround",
                "service_line": "customer_support",
                "within_hours": 4,
                "target_percent": "90",
                "pool_percent": "40",
            },
        ],
    },
    "commitment": {"annual_minimum": "400000.00"},
}
ACME = parse_agreement({**spec_agreement("acme"), **TERMS}).with_version(4)
PLAIN = parse_agreement(spec_agreement("acme")).with_version(1)
#: SPEC §6 example 1 (W = 900: Essential by volume).
EXAMPLE_1 = [
    ClassCount("customer_support", "basic", 600, 600, 0, 0),
    ClassCount("data_entry", "standard", 150, 150, 0, 0),
]
#: ap-turnaround met (39 of 40: 97.50 % ≥ 95), care-turnaround missed (44 of 50: 88.00 % < 90).
ONE_MISSED = [LevelCount(40, 39), LevelCount(50, 44)]


def tier(agreement: Agreement, name: str) -> Any:
    return tier_named(agreement, name, agreement.pricing.tiers[0])


# --- service levels ------------------------------------------------------------------------------


def test_a_missed_level_puts_its_share_of_the_tier_fee_at_stake_to_the_cent() -> None:
    standing = service_levels_standing(ACME, Period(2026, 3), ONE_MISSED, tier(ACME, "Essential"))
    assert standing is not None
    page = standing.model_dump(mode="json")
    assert (page["period"], page["tier"], page["tier_fee"], page["at_risk_percent"]) == (
        "2026-03",
        "Essential",
        "10000.00",
        "10",
    )
    assert page["levels"] == [
        {
            "id": "ap-turnaround",
            "measured": 40,
            "met": 39,
            "attainment_percent": "97.50",
            "target_percent": "95",
            "missed": False,
            "service_line": "accounting",
            "complexity": ["basic", "standard"],
            "within_hours": "24",
            "clock": "business",
            "pool_percent": "60",
            "credit_at_stake": "-600.00",  # 10000.00 × 10 % × 60 %, not billed: met
        },
        {
            "id": "care-turnaround",
            "measured": 50,
            "met": 44,
            "attainment_percent": "88.00",
            "target_percent": "90",
            "missed": True,
            "service_line": "customer_support",
            "complexity": None,
            "within_hours": "4",
            "clock": "elapsed",
            "pool_percent": "40",
            "credit_at_stake": "-400.00",  # 10000.00 × 10 % × 40 %
        },
    ]
    assert page["credits"] == "-400.00"  # only the missed level credits


def test_the_credit_follows_the_tier_and_every_missed_level_adds_up() -> None:
    """Enterprise's fee is 90000.00: both levels missed credit 5400.00 + 3600.00."""
    both = [LevelCount(40, 30), LevelCount(50, 10)]
    standing = service_levels_standing(ACME, Period(2026, 3), both, tier(ACME, "Enterprise"))
    assert standing is not None
    assert [(lv.missed, lv.credit_at_stake) for lv in standing.levels] == [
        (True, "-5400.00"),
        (True, "-3600.00"),
    ]
    assert (standing.tier_fee, standing.credits) == ("90000.00", "-9000.00")


def test_nothing_measured_is_no_attainment_and_no_miss() -> None:
    standing = service_levels_standing(
        ACME, Period(2026, 3), [LevelCount(0, 0), LevelCount(10, 9)], tier(ACME, "Essential")
    )
    assert standing is not None
    assert [(lv.attainment_percent, lv.missed) for lv in standing.levels] == [
        (None, False),
        ("90.00", False),  # exactly at target is met
    ]
    assert standing.credits == "0.00"


def test_an_agreement_without_service_levels_has_no_standing() -> None:
    assert service_levels_standing(PLAIN, Period(2026, 3), [], PLAIN.pricing.tiers[0]) is None


def test_a_tier_renamed_since_it_was_billed_falls_back_to_the_tier_now() -> None:
    now = ACME.pricing.tiers[1]
    assert tier_named(ACME, "Gold", now) is now
    assert tier_named(ACME, None, now) is now
    assert tier_named(ACME, "Enterprise", now).fee == Decimal("90000.00")


# --- the commitment ------------------------------------------------------------------------------

BILLED = {
    "2025-12": BilledPeriod(Decimal("10000.00"), Decimal("0")),  # before the first year
    "2026-01": BilledPeriod(Decimal("10000.00"), Decimal("0")),
    "2026-02": BilledPeriod(Decimal("34600.00"), Decimal("-400.00")),  # a credit is no spend
    "2026-03": BilledPeriod(None, Decimal("0")),  # closed unbilled: counts nothing
    "2027-01": BilledPeriod(Decimal("90000.00"), Decimal("0")),  # the second year
}


def test_committed_spend_is_billed_minus_credits_over_the_year_s_closed_periods() -> None:
    progress = commitment_progress(ACME, Period(2026, 4), BILLED)
    assert progress is not None
    assert progress.model_dump(mode="json") == {
        "contract_year": 1,
        "first_period": "2026-01",
        "last_period": "2026-12",
        "annual_minimum": "400000.00",
        "periods_closed": 3,
        "committed_spend": "45000.00",  # 10000.00 + (34600.00 + 400.00)
        "remaining": "355000.00",
        "year_closed": False,
    }


def test_the_second_year_starts_twelve_periods_later_and_counts_only_its_own() -> None:
    progress = commitment_progress(ACME, Period(2027, 3), BILLED)
    assert progress is not None
    assert (
        progress.contract_year,
        progress.first_period,
        progress.last_period,
        progress.periods_closed,
        progress.committed_spend,
        progress.remaining,
    ) == (2, "2027-01", "2027-12", 1, "90000.00", "310000.00")


def test_a_year_past_its_minimum_has_nothing_remaining_and_a_closed_12th_period_closes_it() -> None:
    year = {f"2026-{m:02d}": BilledPeriod(Decimal("35000.00"), Decimal("0")) for m in range(1, 13)}
    progress = commitment_progress(ACME, Period(2026, 12), year)
    assert progress is not None
    assert (progress.periods_closed, progress.committed_spend, progress.remaining) == (
        12,
        "420000.00",
        "0.00",
    )
    assert progress.year_closed


def test_no_commitment_or_a_period_before_the_first_year_has_no_progress() -> None:
    assert commitment_progress(PLAIN, Period(2026, 4), BILLED) is None
    assert commitment_progress(ACME, Period(2025, 12), BILLED) is None


def test_yen_are_whole() -> None:
    yen = parse_agreement(
        {
            **spec_agreement("globex"),
            "currency": "JPY",
            "pricing": {
                "weights": {"basic": 1, "standard": 2, "complex": 5},
                "tiers": [{"name": "Only", "fee": "1200000"}],
            },
            "effective_from": "2026-01-01",
            "commitment": {"annual_minimum": "20000000"},
        }
    )
    billed = {"2026-01": BilledPeriod(Decimal("1200000"), Decimal("-48000"))}
    progress = commitment_progress(yen, Period(2026, 2), billed)
    assert progress is not None
    assert (progress.annual_minimum, progress.committed_spend, progress.remaining) == (
        "20000000",
        "1248000",
        "18752000",
    )


# --- on the client page and the operator's usage card --------------------------------------------


def test_the_client_page_shows_both_terms_for_the_period_shown() -> None:
    page = client_overview(
        client_id="acme",
        agreement=ACME,
        period=Period(2026, 4),
        open_period=Period(2026, 4),
        counts=EXAMPLE_1,
        closed={},
        invoices=[],
        notes=[],
        levels=ONE_MISSED,
        billed=BILLED,
    ).model_dump(mode="json")
    assert page["service_levels"]["tier"] == "Essential"  # the tier now (volume, W = 900)
    assert page["service_levels"]["credits"] == "-400.00"
    assert page["commitment"]["committed_spend"] == "45000.00"
    assert page["commitment"]["remaining"] == "355000.00"


def test_a_closed_period_s_credits_are_shares_of_the_fee_it_was_billed_at() -> None:
    """Billed at Enterprise (scope), though the counts now land in Essential."""
    page = client_overview(
        client_id="acme",
        agreement=ACME,
        period=Period(2026, 2),
        open_period=Period(2026, 4),
        counts=EXAMPLE_1,
        closed={"2026-02": TierChoice(name="Enterprise", reason="scope")},
        invoices=[],
        notes=[],
        levels=ONE_MISSED,
        billed=BILLED,
    ).model_dump(mode="json")
    assert (page["service_levels"]["tier"], page["service_levels"]["credits"]) == (
        "Enterprise",
        "-3600.00",
    )
    assert page["commitment"]["contract_year"] == 1


def test_without_the_reads_or_the_sections_there_is_nothing_to_show() -> None:
    for agreement, levels, billed in (
        (ACME, None, None),
        (PLAIN, None, {}),
        (None, ONE_MISSED, BILLED),
    ):
        page = client_overview(
            client_id="acme",
            agreement=agreement,
            period=Period(2026, 4),
            open_period=Period(2026, 4),
            counts=EXAMPLE_1,
            closed={},
            invoices=[],
            notes=[],
            levels=levels,
            billed=billed,
        )
        assert (page.service_levels, page.commitment) == (None, None)


def open_april(agreement: Agreement | None, counts: list[ClassCount]) -> OpenPeriod:
    period = Period(2026, 4)
    return OpenPeriod(agreement, period, *period_bounds(period, "America/New_York"), counts)


def test_the_usage_card_shows_the_open_period_s_levels_at_the_tier_now() -> None:
    """12 complex accounting items lift April to Enterprise by scope: its fee sets the credit."""
    counts = [*EXAMPLE_1, ClassCount("accounting", "complex", 12, 12, 0, 0)]
    open_period = open_april(ACME, counts)
    card = client_usage(
        client_id="acme",
        open_period=open_period,
        now=open_period.start + timedelta(days=3),
        closed=False,
        levels=ONE_MISSED,
        billed=BILLED,
    ).model_dump(mode="json")
    assert card["tier"] == {"name": "Enterprise", "reason": "scope"}
    assert (card["service_levels"]["tier_fee"], card["service_levels"]["credits"]) == (
        "90000.00",
        "-3600.00",
    )
    assert card["commitment"]["remaining"] == "355000.00"
    plain = client_usage(
        client_id="acme",
        open_period=open_april(PLAIN, counts),
        now=open_period.start,
        closed=False,
    )
    assert (plain.service_levels, plain.commitment) == (None, None)


class LevelRows:
    """A connection answering the ledger's level counts (elapsed clocks only: one fetch)."""

    def __init__(self) -> None:
        self.reads = 0

    async def fetch(self, query: str, *args: Any) -> list[dict[str, int]]:
        self.reads += 1
        return [{"measured": 10, "met": 9}, {"measured": 4, "met": 4}]


async def test_the_operator_page_measures_a_client_s_levels_again_only_after_the_ttl() -> None:
    elapsed_only = {
        **TERMS["service_levels"],
        "calendar": None,
        "levels": [{**level, "clock": "elapsed"} for level in TERMS["service_levels"]["levels"]],
    }
    agreement = parse_agreement(
        {**spec_agreement("acme"), **TERMS, "service_levels": elapsed_only}
    ).with_version(2)
    shown = {"acme": open_april(agreement, EXAMPLE_1), "plain": open_april(PLAIN, EXAMPLE_1)}
    conn = LevelRows()
    cache: LevelCache = {"gone": (("2026-04", 1), datetime(2026, 4, 1, tzinfo=UTC), [])}
    now = datetime(2026, 4, 10, tzinfo=UTC)
    first = await _level_counts(conn, shown, now, cache)  # type: ignore[arg-type]
    assert first == {"acme": [LevelCount(10, 9), LevelCount(4, 4)]}
    assert set(cache) == {"acme"}  # a client no longer shown is forgotten
    await _level_counts(conn, shown, now + LEVELS_TTL / 2, cache)  # type: ignore[arg-type]
    assert conn.reads == 1
    await _level_counts(conn, shown, now + LEVELS_TTL, cache)  # type: ignore[arg-type]
    assert conn.reads == 2
    newer = {"acme": open_april(agreement.with_version(3), EXAMPLE_1)}
    await _level_counts(conn, newer, now + LEVELS_TTL, cache)  # type: ignore[arg-type]
    assert conn.reads == 3  # a new agreement version is measured at once
