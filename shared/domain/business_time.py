"""Business time (SPEC §11, §13): how much of an interval lies inside a calendar's working hours.
Pure.

A calendar lists weekdays, one span of local wall-clock hours and holidays, in a timezone. Each
listed weekday that is not a holiday (local dates) contributes the interval [start, end) of its
local wall clock; business time between two instants is the exact elapsed time of [a, b] inside
those intervals. Every interval is turned into UTC before anything is subtracted, so a DST change
inside working hours makes that day's interval an hour shorter or longer, as a clock on the wall
would not but elapsed time does. A wall-clock time that a DST jump skips is read with the offset
before the jump (Python's `fold=0`): 02:30 on a spring-forward night is 03:30 new time. A day's
interval never leaves that local day's instants, so a day a zone skips whole counts nothing.

`BusinessClock.covering(calendar, since, until)` lays the intervals of a window out once, with the
business time accumulated before each; `clock.elapsed(a, b)` is then two binary searches. The
database measures a period's items with the same table (`shared.ledger.service_levels`), so what
counts as business time is decided here only.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from shared.domain.periods import load_zone

#: Weekday names as a calendar writes them, Monday first (`date.weekday()` order).
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY: Final = timedelta(days=1)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Working hours: `days` (0 = Monday), local `start` to `end` (None: the midnight that ends
    the day, written "24:00"), minus `holidays`, in `timezone`."""

    days: frozenset[int]
    start: time
    end: time | None
    holidays: frozenset[date]
    timezone: str

    def __post_init__(self) -> None:
        if not self.days <= frozenset(range(7)):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        if self.end is not None and self.end <= self.start:
            raise ValueError("working hours must end after they start")
        load_zone(self.timezone)  # ValueError for an unknown zone

    def intervals(self, since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The working intervals `[a, b)` in UTC, in order, of every local day that touches
        `[since, until]` (so the first may begin before `since` and the last end after
        `until`)."""
        zone = load_zone(self.timezone)
        day = _utc(since).astimezone(zone).date() - _DAY
        last = _utc(until).astimezone(zone).date() + _DAY
        while day <= last:
            if day.weekday() in self.days and day not in self.holidays:
                # Clipped to the day's own instants: a day a zone skips whole (Pacific/Apia,
                # 30 December 2011) has none, though its hours read with `fold=0` would fall
                # on the next day's.
                begins, ends = _instant(day, time(0), zone), _instant(day + _DAY, time(0), zone)
                opens = max(begins, _instant(day, self.start, zone))
                closes = ends if self.end is None else min(ends, _instant(day, self.end, zone))
                if closes > opens:
                    yield opens, closes
            day += _DAY


@dataclass(frozen=True, slots=True)
class BusinessClock:
    """A calendar's working intervals over a window laid out for lookups: `starts[i]` and
    `ends[i]` (UTC), and `before[i]`, the business time in microseconds from the window's first
    interval up to `starts[i]`."""

    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]
    before: tuple[int, ...]

    @classmethod
    def covering(
        cls, calendar: BusinessCalendar, since: datetime, until: datetime
    ) -> BusinessClock:
        """The clock for instants in `[since, until]`."""
        starts: list[datetime] = []
        ends: list[datetime] = []
        before: list[int] = []
        total = 0
        for opens, closes in calendar.intervals(since, until):
            starts.append(opens)
            ends.append(closes)
            before.append(total)
            total += _micros(closes - opens)
        return cls(tuple(starts), tuple(ends), tuple(before))

    def at(self, instant: datetime) -> int:
        """Business microseconds from the start of the window's first interval to `instant`
        (which must lie in the window the clock covers)."""
        index = bisect_right(self.starts, _utc(instant)) - 1
        if index < 0:
            return 0
        inside = min(_utc(instant) - self.starts[index], self.ends[index] - self.starts[index])
        return self.before[index] + _micros(inside)

    def elapsed(self, opened: datetime, completed: datetime) -> timedelta:
        """The business time of `[opened, completed]`; zero when `completed` is not later."""
        return max(timedelta(0), (self.at(completed) - self.at(opened)) * _MICROSECOND)


def business_time(calendar: BusinessCalendar, opened: datetime, completed: datetime) -> timedelta:
    """The business time of `[opened, completed]` on `calendar`."""
    return BusinessClock.covering(calendar, opened, completed).elapsed(opened, completed)


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    local = datetime.combine(day, wall).replace(tzinfo=zone)
    return local.astimezone(UTC)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instants must be timezone-aware")
    return instant.astimezone(UTC)


def _micros(span: timedelta) -> int:
    return span // _MICROSECOND
