"""The business-hours clock of SPEC §11/§13 (shared/domain/business_time.py) as a pure module:
properties that hold for any calendar, zone and pair of instants, DST nights in zones that move
their clocks by an hour or by half of one, and the worked examples a client would check by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.business_time import BusinessCalendar, BusinessClock, business_time
from shared.domain.periods import timezone_names

ALL_DAYS = frozenset(range(7))
WEEKDAYS = frozenset(range(5))
#: Zones that move their clocks: by an hour at night (New York, London), at midnight (Santiago),
#: by 30 minutes (Lord Howe), south of the equator (Sydney), by a whole day (Apia, 2011).
DST_ZONES = (
    "America/New_York",
    "Europe/London",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Apia",
    "Africa/Casablanca",
)
#: Instants are drawn within SPAN of one another, anywhere in the years Tierline bills.
CENTURY = (datetime(2000, 1, 2), datetime(2099, 10, 1))
SPAN = timedelta(days=60)
PROPERTY = settings(max_examples=200, deadline=None)


def calendar(
    tz: str = "America/New_York",
    hours: tuple[str, str | None] = ("09:00", "18:00"),
    days: frozenset[int] = WEEKDAYS,
    holidays: tuple[date, ...] = (),
) -> BusinessCalendar:
    start, end = hours
    return BusinessCalendar(
        days=days,
        start=time.fromisoformat(start),
        end=None if end is None else time.fromisoformat(end),
        holidays=frozenset(holidays),
        timezone=tz,
    )


def around_the_clock(tz: str) -> BusinessCalendar:
    """Every day, 00:00 to 24:00, no holidays: business time is elapsed time."""
    return calendar(tz, ("00:00", None), ALL_DAYS)


def local(text: str, tz: str = "America/New_York") -> datetime:
    """A wall-clock time in `tz` (fold=0: the first of a repeated hour)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def hours(value: float) -> timedelta:
    return timedelta(hours=value)


# --- strategies ----------------------------------------------------------------------------------

zones = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(sorted(timezone_names())))
bases = st.datetimes(min_value=CENTURY[0], max_value=CENTURY[1], timezones=st.just(UTC))


def minute_of_day(minutes: int) -> time | None:
    """A wall-clock time from minutes after midnight; 1440 is "24:00" (None)."""
    return None if minutes == 24 * 60 else time(minutes // 60, minutes % 60)


@st.composite
def scenes(draw: st.DrawFn, count: int) -> tuple[BusinessCalendar, list[datetime]]:
    """A calendar (any days, hours to the minute or to 24:00, holidays, zone) and `count`
    instants (UTC, microseconds included) within SPAN of a base in 2000..2099, its holidays
    among the days they touch."""
    base = draw(bases)
    offsets = st.timedeltas(min_value=timedelta(0), max_value=SPAN)
    instants = [base + draw(offsets) for _ in range(count)]
    start = draw(st.integers(0, 24 * 60 - 1))
    opens = minute_of_day(start)
    assert opens is not None
    days = st.dates(min_value=base.date() - timedelta(days=1), max_value=(base + SPAN).date())
    cal = BusinessCalendar(
        days=draw(st.frozensets(st.integers(0, 6))),
        start=opens,
        end=minute_of_day(draw(st.integers(start + 1, 24 * 60))),
        holidays=draw(st.frozensets(days, max_size=10)),
        timezone=draw(zones),
    )
    return cal, instants


# --- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(scene=scenes(2))
def test_turnaround_is_never_negative_nor_longer_than_elapsed(
    scene: tuple[BusinessCalendar, list[datetime]],
) -> None:
    cal, (a, b) = scene
    assert timedelta(0) <= business_time(cal, a, b) <= max(timedelta(0), b - a)


@PROPERTY
@given(scene=scenes(3))
def test_business_time_adds_up_over_a_split(
    scene: tuple[BusinessCalendar, list[datetime]],
) -> None:
    cal, points = scene
    a, b, c = sorted(points)
    assert business_time(cal, a, c) == business_time(cal, a, b) + business_time(cal, b, c)


@PROPERTY
@given(tz=zones, scene=scenes(2))
def test_around_the_clock_it_is_elapsed_time_in_any_zone(
    tz: str, scene: tuple[BusinessCalendar, list[datetime]]
) -> None:
    a, b = sorted(scene[1])
    assert business_time(around_the_clock(tz), a, b) == b - a


@PROPERTY
@given(scene=scenes(2))
def test_an_instant_written_in_another_offset_is_the_same_instant(
    scene: tuple[BusinessCalendar, list[datetime]],
) -> None:
    cal, (a, b) = scene
    shifted = business_time(
        cal, a.astimezone(ZoneInfo("Asia/Kolkata")), b.astimezone(ZoneInfo(cal.timezone))
    )
    assert shifted == business_time(cal, a, b)


@PROPERTY
@given(scene=scenes(12))
def test_a_clock_over_a_window_agrees_with_business_time(
    scene: tuple[BusinessCalendar, list[datetime]],
) -> None:
    cal, points = scene
    since, until = min(points), max(points)
    clock = BusinessClock.covering(cal, since, until)
    for a, b in zip(points[::2], points[1::2], strict=True):
        assert clock.elapsed(a, b) == business_time(cal, a, b)
        first, second = sorted((a, b))
        assert (clock.at(second) - clock.at(first)) * timedelta(microseconds=1) == (
            business_time(cal, first, second)
        )


def test_a_day_the_zone_skips_has_no_business_hours() -> None:
    # Samoa skipped Friday 30 December 2011, going from Thursday 23:59:59 (-10:00) to
    # Saturday 00:00 (+14:00). Read with fold=0, the skipped Friday's 09:00-18:00 would be
    # Saturday's; it is no day at all.
    tz = "Pacific/Apia"
    weekdays = calendar(tz)
    thursday, saturday = local("2011-12-29T00:00", tz), local("2011-12-31T23:00", tz)
    assert business_time(weekdays, thursday, saturday) == hours(9)
    every_day = calendar(tz, days=ALL_DAYS)
    assert business_time(every_day, thursday, saturday) == hours(18)
    assert business_time(around_the_clock(tz), thursday, saturday) == hours(47)
    assert saturday.astimezone(UTC) - thursday.astimezone(UTC) == hours(47)


# --- DST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "night", "real"),
    [
        ("America/New_York", "2026-03-08", hours(7)),  # 02:00 -> 03:00
        ("America/New_York", "2026-11-01", hours(9)),  # 02:00 -> 01:00
        ("Europe/London", "2026-03-29", hours(7)),  # 01:00 -> 02:00
        ("Europe/London", "2026-10-25", hours(9)),  # 02:00 -> 01:00
        ("Australia/Lord_Howe", "2026-10-04", hours(7.5)),  # 02:00 -> 02:30
        ("Australia/Lord_Howe", "2026-04-05", hours(8.5)),  # 02:00 -> 01:30
        ("America/New_York", "2026-03-15", hours(8)),  # an ordinary night
    ],
)
def test_a_dst_night_counts_its_real_length_around_the_clock(
    tz: str, night: str, real: timedelta
) -> None:
    # Eight hours on the wall, 22:00 to 06:00: seven, nine, or seven and a half in fact.
    before = date.fromisoformat(night) - timedelta(days=1)
    opened = local(f"{before}T22:00", tz)
    completed = local(f"{night}T06:00", tz)
    assert business_time(around_the_clock(tz), opened, completed) == real
    # (Python subtracts two times of one zone on the wall clock; the instants differ by `real`.)
    assert completed.astimezone(UTC) - opened.astimezone(UTC) == real


@pytest.mark.parametrize(
    ("tz", "day", "length"),
    [
        ("America/New_York", "2026-03-01", hours(3)),  # an ordinary Sunday
        ("America/New_York", "2026-03-08", hours(2)),
        ("America/New_York", "2026-11-01", hours(4)),
        ("Europe/London", "2026-03-29", hours(2)),
        ("Europe/London", "2026-10-25", hours(4)),
        ("Australia/Lord_Howe", "2026-10-04", hours(2.5)),
        ("Australia/Lord_Howe", "2026-04-05", hours(3.5)),
    ],
)
def test_business_hours_holding_a_dst_change_are_shorter_or_longer(
    tz: str, day: str, length: timedelta
) -> None:
    cal = calendar(tz, ("01:00", "04:00"), ALL_DAYS)
    following = date.fromisoformat(day) + timedelta(days=1)
    whole_day = business_time(cal, local(f"{day}T00:00", tz), local(f"{following}T00:00", tz))
    assert whole_day == length


def test_hours_that_start_in_a_skipped_hour_start_an_hour_later_in_new_time() -> None:
    # 02:30 does not exist on 8 March 2026 in New York: read with the offset before the jump,
    # it is 03:30 EDT, so 02:30-05:00 holds an hour and a half.
    cal = calendar(hours=("02:30", "05:00"), days=ALL_DAYS)
    spent = business_time(cal, local("2026-03-08T00:00"), local("2026-03-08T12:00"))
    assert spent == hours(1.5)


# --- worked examples (09:00-18:00, Monday to Friday, New York) -----------------------------------


def test_friday_evening_to_monday_morning_is_two_business_hours() -> None:
    assert business_time(calendar(), local("2026-06-05T17:00"), local("2026-06-08T10:00")) == (
        hours(2)
    )
    # The weekend DST change lies outside working hours: still two hours.
    assert business_time(calendar(), local("2026-03-06T17:00"), local("2026-03-09T10:00")) == (
        hours(2)
    )


def test_a_holiday_in_between_is_skipped_whole() -> None:
    opened, completed = local("2026-12-24T17:00"), local("2026-12-28T10:00")  # Thursday, Monday
    assert business_time(calendar(), opened, completed) == hours(11)
    christmas = calendar(holidays=(date(2026, 12, 25),))
    assert business_time(christmas, opened, completed) == hours(2)


def test_opened_on_a_weekend_counts_from_monday_morning() -> None:
    opened = local("2026-06-06T12:00")  # Saturday
    assert business_time(calendar(), opened, local("2026-06-08T09:00")) == timedelta(0)
    assert business_time(calendar(), opened, local("2026-06-08T11:30")) == hours(2.5)


def test_within_one_day_only_the_working_hours_count() -> None:
    day = "2026-06-09"  # a Tuesday
    assert business_time(calendar(), local(f"{day}T07:00"), local(f"{day}T20:00")) == hours(9)
    assert business_time(calendar(), local(f"{day}T10:15"), local(f"{day}T10:45")) == (
        timedelta(minutes=30)
    )
    assert business_time(calendar(), local(f"{day}T18:00"), local(f"{day}T23:00")) == (timedelta(0))


def test_completed_before_opened_is_zero() -> None:
    assert business_time(calendar(), local("2026-06-09T12:00"), local("2026-06-09T10:00")) == (
        timedelta(0)
    )


def test_hours_to_midnight_end_at_the_next_days_start() -> None:
    evenings = calendar(hours=("20:00", None))
    opened, completed = local("2026-06-09T19:00"), local("2026-06-10T21:00")
    assert business_time(evenings, opened, completed) == hours(5)


def test_a_calendar_refuses_what_cannot_be_working_hours() -> None:
    with pytest.raises(ValueError, match="end after they start"):
        calendar(hours=("18:00", "09:00"))
    with pytest.raises(ValueError, match="days"):
        calendar(days=frozenset({7}))
    with pytest.raises(ValueError, match="timezone"):
        calendar(tz="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="timezone-aware"):
        business_time(calendar(), datetime(2026, 6, 9, 10), local("2026-06-09T12:00"))
