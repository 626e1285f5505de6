from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.periods import (
    FIRST_PERIOD,
    LAST_PERIOD,
    Period,
    PeriodError,
    close_due_at,
    is_close_due,
    is_timezone,
    load_zone,
    parse_period,
    period_bounds,
    period_of,
    start_of_day,
)


def iso_bounds(key: str, tz: str) -> tuple[str, str]:
    start, end = period_bounds(parse_period(key), tz)
    return start.isoformat(), end.isoformat()


def test_parse_period_and_key() -> None:
    period = parse_period("2026-10")
    assert period == Period(2026, 10)
    assert period.key == "2026-10" == str(period)
    assert Period(7, 3).key == "0007-03"


@pytest.mark.parametrize(
    "text",
    ["2026-13", "2026-00", "2026-1", "26-10", "2026/10", " 2026-10", "2026-10 ", "2026-10-01",
     "0000-05", "", "２０２６-10", "2026-10\x00"],
)  # fmt: skip
def test_parse_period_rejects(text: str) -> None:
    with pytest.raises(PeriodError, match="period"):
        parse_period(text)


@pytest.mark.parametrize("text", ["0001-01", "1999-12", "2100-01", "9999-12"])
def test_parse_period_refuses_periods_outside_2000_to_2099(text: str) -> None:
    with pytest.raises(PeriodError, match=r"outside 2000-01\.\.2099-12"):
        parse_period(text)


def test_parse_period_bounds_are_inclusive() -> None:
    assert parse_period("2000-01") == FIRST_PERIOD == Period(2000, 1)
    assert parse_period("2099-12") == LAST_PERIOD == Period(2099, 12)
    assert period_bounds(LAST_PERIOD, "Pacific/Kiritimati")[1].year == 2100


def test_a_long_bad_period_is_not_echoed_whole() -> None:
    with pytest.raises(PeriodError) as caught:
        parse_period("x" * 10_000)
    assert len(str(caught.value)) < 200


def test_parse_period_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_period(202610)  # type: ignore[arg-type]


def test_period_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        Period(2026, 13)
    with pytest.raises(ValueError):
        Period(0, 1)
    with pytest.raises(TypeError):
        Period(2026, True)


def test_next_previous_and_order() -> None:
    assert Period(2026, 12).next() == Period(2027, 1)
    assert Period(2027, 1).previous() == Period(2026, 12)
    assert Period(2026, 5).next() == Period(2026, 6)
    assert Period(2026, 5).previous() == Period(2026, 4)
    assert Period(2026, 12) < Period(2027, 1) < Period(2027, 2)
    assert sorted([Period(2027, 1), Period(2026, 2), Period(2026, 11)]) == [
        Period(2026, 2),
        Period(2026, 11),
        Period(2027, 1),
    ]
    assert max(Period(2025, 12), Period(2026, 1)) == Period(2026, 1)


def test_utc_client() -> None:
    assert iso_bounds("2026-12", "UTC") == (
        "2026-12-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    )
    assert iso_bounds("2028-02", "UTC")[1] == "2028-03-01T00:00:00+00:00"  # leap year


def test_month_ends() -> None:
    for key, days in [("2026-01", 31), ("2026-02", 28), ("2028-02", 29), ("2026-04", 30)]:
        start, end = period_bounds(parse_period(key), "UTC")
        assert end - start == timedelta(days=days)


def test_new_york_across_dst() -> None:
    # The spec's own example: October is all daylight time.
    assert iso_bounds("2026-10", "America/New_York") == (
        "2026-10-01T00:00:00-04:00",
        "2026-11-01T00:00:00-04:00",
    )
    # DST ends on 2026-11-01 at 02:00: November starts in EDT and ends in EST.
    assert iso_bounds("2026-11", "America/New_York") == (
        "2026-11-01T00:00:00-04:00",
        "2026-12-01T00:00:00-05:00",
    )
    start, end = period_bounds(Period(2026, 11), "America/New_York")
    # Python subtracts same-zone datetimes on the wall clock; elapsed time needs UTC.
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=30, hours=1)
    assert iso_bounds("2026-03", "America/New_York") == (
        "2026-03-01T00:00:00-05:00",
        "2026-04-01T00:00:00-04:00",
    )


def test_london_across_dst() -> None:
    assert iso_bounds("2026-03", "Europe/London") == (
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+01:00",
    )
    assert iso_bounds("2026-10", "Europe/London") == (
        "2026-10-01T00:00:00+01:00",
        "2026-11-01T00:00:00+00:00",
    )


def test_half_and_quarter_hour_zones() -> None:
    assert iso_bounds("2026-10", "Asia/Kolkata") == (
        "2026-10-01T00:00:00+05:30",
        "2026-11-01T00:00:00+05:30",
    )
    start, _ = period_bounds(Period(2026, 10), "Asia/Kolkata")
    assert start.astimezone(UTC) == datetime(2026, 9, 30, 18, 30, tzinfo=UTC)
    assert iso_bounds("2026-01", "Asia/Kathmandu") == (
        "2026-01-01T00:00:00+05:45",
        "2026-02-01T00:00:00+05:45",
    )


def test_midnight_that_does_not_exist() -> None:
    # Paraguay sprang forward at 00:00 on 2023-10-01: the month began at 01:00 local.
    start, _ = period_bounds(Period(2023, 10), "America/Asuncion")
    assert start.isoformat() == "2023-10-01T01:00:00-03:00"
    assert period_of(start, "America/Asuncion") == Period(2023, 10)
    just_before = start.astimezone(UTC) - timedelta(microseconds=1)
    assert period_of(just_before, "America/Asuncion") == Period(2023, 9)


def test_period_of() -> None:
    ny = "America/New_York"
    assert period_of(datetime(2026, 11, 1, 3, 59, 59, tzinfo=UTC), ny) == Period(2026, 10)
    assert period_of(datetime(2026, 11, 1, 4, 0, tzinfo=UTC), ny) == Period(2026, 11)
    assert period_of(datetime(2026, 9, 30, 18, 29, 59, tzinfo=UTC), "Asia/Kolkata") == Period(
        2026, 9
    )
    assert period_of(datetime(2026, 9, 30, 18, 30, tzinfo=UTC), "Asia/Kolkata") == Period(2026, 10)
    assert period_of(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "UTC") == Period(2026, 12)
    assert period_of(datetime(2027, 1, 1, tzinfo=UTC), "UTC") == Period(2027, 1)


def test_period_of_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_of(datetime(2026, 10, 1), "UTC")


@pytest.mark.parametrize("tz", ["Mars/Olympus", "america/new_york", "localtime", "", "EST+5"])
def test_unknown_timezone(tz: str) -> None:
    assert not is_timezone(tz)
    with pytest.raises(ValueError, match="timezone"):
        load_zone(tz)
    with pytest.raises(ValueError, match="timezone"):
        period_bounds(Period(2026, 1), tz)


ZONES = ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "America/Asuncion", "Pacific/Chatham"]  # fmt: skip


@given(
    instant=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
    ),
    tz=st.sampled_from(ZONES),
)
def test_an_instant_lies_within_the_bounds_of_its_period(instant: datetime, tz: str) -> None:
    period = period_of(instant, tz)
    start, end = period_bounds(period, tz)
    assert start <= instant < end
    assert period_bounds(period.next(), tz)[0] == end


def test_close_due_at_counts_elapsed_hours() -> None:
    due = close_due_at(Period(2026, 10), "America/New_York", 72)
    # Period ends 2026-11-01T04:00Z; DST ends the same morning, so 72 h later is 23:00 EST.
    assert due.astimezone(UTC) == datetime(2026, 11, 4, 4, 0, tzinfo=UTC)
    assert due.isoformat() == "2026-11-03T23:00:00-05:00"
    assert close_due_at(Period(2026, 10), "UTC", 0) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        close_due_at(Period(2026, 10), "UTC", -1)


def test_is_close_due_takes_now() -> None:
    period = Period(2026, 10)
    assert not is_close_due(period, "UTC", 72, datetime(2026, 11, 3, 23, 59, tzinfo=UTC))
    assert is_close_due(period, "UTC", 72, datetime(2026, 11, 4, 0, 0, tzinfo=UTC))
    with pytest.raises(ValueError):
        is_close_due(period, "UTC", 72, datetime(2026, 11, 4))


def test_start_of_day() -> None:
    from datetime import date

    assert start_of_day(date(2026, 1, 1), "America/New_York").isoformat() == (
        "2026-01-01T00:00:00-05:00"
    )
