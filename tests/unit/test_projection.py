"""SPEC §8's projection (`shared.domain.projection`), and the one thing it exists for: the
console's usage card and billing's forecast project a period the same way, whatever the moment
and the counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.billing.insight import forecast
from services.console.usage import OpenPeriod, client_usage, projected_weighted_units
from shared.domain.agreement.agreement import load_agreement_yaml
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES, ServiceClass
from shared.domain.periods import Period, period_bounds
from shared.domain.projection import MIN_ELAPSED_FOR_PROJECTION, progress, project_usage
from shared.domain.rating import ClassUsage
from shared.ledger.reads import ClassCount
from tests.spec_example import SPEC_YAML

ACME = load_agreement_yaml(SPEC_YAML).with_version(1)
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


# --- the projection itself ----------------------------------------------------------------------


def test_the_elapsed_fraction_is_clamped_to_the_period() -> None:
    start, end = NOVEMBER
    assert progress(start, end, datetime(2026, 11, 16, tzinfo=UTC)).fraction(4) == Decimal("0.5")
    assert progress(start, end, datetime(2026, 10, 1, tzinfo=UTC)).fraction(4) == 0
    assert progress(start, end, datetime(2027, 1, 1, tzinfo=UTC)).fraction(4) == 1


def test_the_projection_scales_items_units_and_seconds_half_up() -> None:
    start, end = NOVEMBER
    usage = [ClassUsage(ServiceClass("it_support", "complex"), items=9, units=9)]
    # 27 of 30 days: 9 × 30/27 = 10.
    (projected,) = project_usage(usage, progress(start, end, start + timedelta(days=27)))
    assert (projected.items, projected.units) == (10, 10)
    # 2 of 30 days: 1 × 15 = 15 and 3 × 15 = 45; 7 of 30 days: 1 × 30/7 = 4.28… -> 4,
    # 3 × 30/7 = 12.86 -> 13 (half-up).
    usage = [ClassUsage(ServiceClass("hr", "basic"), 1, 3, 3)]
    assert project_usage(usage, progress(start, end, start + timedelta(days=2))) == [
        ClassUsage(ServiceClass("hr", "basic"), 15, 45, 45)
    ]
    assert project_usage(usage, progress(start, end, start + timedelta(days=7))) == [
        ClassUsage(ServiceClass("hr", "basic"), 4, 13, 13)
    ]


def test_half_a_unit_rounds_up() -> None:
    # 1 item after 2/3 of the period: 1 × 3/2 = 1.5 -> 2.
    start = datetime(2026, 11, 1, tzinfo=UTC)
    at = progress(start, start + timedelta(hours=3), start + timedelta(hours=2))
    assert at.scale(1) == 2


def test_before_during_the_first_hour_and_after_the_period_the_projection_is_the_usage() -> None:
    start, end = NOVEMBER
    usage = [ClassUsage(ServiceClass("hr", "basic"), 9, 9)]
    for now in (
        start - timedelta(days=3),
        start,
        start + MIN_ELAPSED_FOR_PROJECTION - timedelta(microseconds=1),
        end,
        end + timedelta(days=40),
    ):
        assert project_usage(usage, progress(start, end, now)) == usage, now
    # From the first full hour on, the run rate is carried: 9 × 720 = 6480.
    (projected,) = project_usage(usage, progress(start, end, start + MIN_ELAPSED_FOR_PROJECTION))
    assert projected.items == 6480


def test_entries_of_one_class_are_added_up_before_they_are_scaled() -> None:
    # 1 + 1 items at 2/3 of the period: (1 + 1) × 3/2 = 3, where scaling each would give 2 + 2.
    start = datetime(2026, 11, 1, tzinfo=UTC)
    at = progress(start, start + timedelta(hours=3), start + timedelta(hours=2))
    hr = ServiceClass("hr", "basic")
    assert project_usage([ClassUsage(hr, 1, 1), ClassUsage(hr, 1, 1)], at) == [ClassUsage(hr, 3, 3)]


def test_elapsed_time_is_measured_on_utc_instants_across_dst() -> None:
    # November 2026 in New York is 721 hours (the clocks go back on the 1st); at local midnight
    # on the 16th, 361 of them have passed (the wall clock would say 360 of 720).
    start, end = period_bounds(Period(2026, 11), "America/New_York")
    at = progress(start, end, datetime(2026, 11, 16, 5, tzinfo=UTC))
    assert (at.elapsed, at.length) == (361 * 3600 * 10**6, 721 * 3600 * 10**6)
    assert at.scale(361) == 721


def test_naive_moments_are_refused() -> None:
    start, end = NOVEMBER
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        progress(start, end, datetime(2026, 11, 16))


# --- the console and billing agree -------------------------------------------------------------


def console_projection(period: Period, counts: list[ClassCount], now: datetime) -> tuple[Any, ...]:
    """What the console shows as the period-end projection, and the figure that ranks the card."""
    start, end = period_bounds(period, ACME.timezone)
    open_period = OpenPeriod(ACME, period, start, end, counts)
    card = client_usage(
        client_id=ACME.client_id, open_period=open_period, now=now, closed=False
    ).model_dump()
    ranking = projected_weighted_units(open_period, now)
    assert Decimal(card["projected"]["weighted_units"]) == ranking
    projected = card["projected"]
    return projected["items"], projected["weighted_units"], projected["tier"], card["elapsed"]


def billing_projection(period: Period, counts: list[ClassCount], now: datetime) -> tuple[Any, ...]:
    """What `GET /v1/forecast` answers for the same period, counts and moment."""
    result = forecast(ACME, period, counts, now).model_dump(mode="json")
    projected = result["projected"]
    return (
        projected["items"],
        projected["weighted_units"],
        projected["tier"],
        float(result["elapsed_fraction"]),
    )


def test_thirty_minutes_into_the_month_two_items_are_not_extrapolated() -> None:
    """Early in the month there is no run rate: both show the 2 items so far and Essential
    (the console used to carry them × 1440 to 2,880 items and Professional)."""
    period = Period(2026, 6)
    start, _ = period_bounds(period, ACME.timezone)
    now = start + timedelta(minutes=30)
    counts = [ClassCount("it_support", "standard", 2, 2, 0, 0)]
    expected = (2, "4", {"name": "Essential", "reason": "volume"}, 0.0007)
    assert console_projection(period, counts, now) == expected
    assert billing_projection(period, counts, now) == expected


CLASSES = [(line, complexity) for line in SERVICE_LINES for complexity in COMPLEXITIES]
COUNTS = st.lists(
    st.builds(
        lambda cls, items, units_per_item, seconds: ClassCount(
            cls[0], cls[1], items, items * units_per_item, seconds, 0
        ),
        st.sampled_from(CLASSES),
        st.integers(0, 5_000),
        st.integers(1, 4),
        st.integers(0, 10**6),
    ),
    max_size=8,
)
PERIODS = st.builds(Period, st.integers(2026, 2028), st.integers(1, 12))


@settings(max_examples=600, deadline=None)
@given(period=PERIODS, counts=COUNTS, ppm=st.integers(0, 10**6), unclassified=st.integers(0, 50))
def test_the_console_and_the_forecast_project_alike(
    period: Period, counts: list[ClassCount], ppm: int, unclassified: int
) -> None:
    """`ppm` millionths of the period have passed (whole microseconds)."""
    start, end = (b.astimezone(UTC) for b in period_bounds(period, ACME.timezone))
    now = start + (end - start) * ppm // 10**6
    counts = [*counts, ClassCount("unclassified", "none", unclassified, unclassified, 0, 0)]
    assert console_projection(period, counts, now) == billing_projection(period, counts, now)
