"""Metering's pure counting: late flags and the per-slot period shortcut."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.metering.counting import (
    MeteredItem,
    first_copies,
    flag_late,
    period_of_item,
    why_unmeterable,
)
from shared.domain.periods import period_of

ZONES = (
    "UTC",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Europe/Berlin",
)


def item(n: int, at: datetime, **fields: object) -> MeteredItem:
    base = {
        "client_id": "c",
        "item_id": f"i{n}",
        "completed_at": at,
        "service_line": "hr",
        "complexity": "basic",
        "units": 2,
        "handling_seconds": 30,
        "rule_id": None,
        "agreement_version": None,
    }
    return MeteredItem(**{**base, **fields})  # type: ignore[arg-type]


@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(ZONES),
)
def test_the_slot_shortcut_gives_the_same_period_as_the_instant(at: datetime, tz: str) -> None:
    assert period_of_item(item(0, at), tz) == period_of(at, tz)


def test_month_edges_across_daylight_saving() -> None:
    last_second = datetime(2026, 11, 1, 3, 59, 59, tzinfo=UTC)  # 23:59:59 EDT on Oct 31
    assert period_of_item(item(0, last_second), "America/New_York").key == "2026-10"
    assert (
        period_of_item(item(0, last_second + timedelta(seconds=1)), "America/New_York").key
        == "2026-11"
    )


def test_items_of_closed_periods_are_flagged_late() -> None:
    october = item(1, datetime(2026, 10, 31, 23, tzinfo=UTC))
    november = item(2, datetime(2026, 11, 1, 1, tzinfo=UTC))
    flagged = flag_late([october, november], timezone_of=lambda _: "UTC", closed={("c", "2026-10")})
    assert [i.late for i in flagged] == [True, False]


def test_the_first_copy_of_each_key_is_kept_in_batch_order() -> None:
    at = datetime(2026, 10, 5, tzinfo=UTC)
    b1, a1, b2, a1_again = item(2, at), item(1, at), item(3, at), item(1, at, units=9)
    other_client = item(1, at, client_id="d")
    firsts = first_copies([b1, a1, b2, a1_again, other_client])
    assert list(firsts.values()) == [b1, a1, b2, other_client]
    assert firsts[("c", "i1")].units == 2  # the re-sent copy (9 units) does not replace it


def test_an_instant_at_the_ends_of_time_is_unmeterable_in_some_zone() -> None:
    # The shortcut for ordinary years must not hide the edges: the first hours of year 1 lie
    # in no period of a zone west of UTC, the last hours of 9999 none east of it.
    first = item(0, datetime(1, 1, 1, tzinfo=UTC))
    last = item(0, datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    assert all(
        why_unmeterable(item(0, datetime(2026, 10, 5, tzinfo=UTC)), z) is None for z in ZONES
    )
    problems = [why_unmeterable(first, "America/New_York"), why_unmeterable(last, "Asia/Tokyo")]
    assert all(p is not None and "lies in no period" in p for p in problems)
