"""Billing periods: calendar months (`YYYY-MM`) in a client's IANA timezone.

Pure: nothing here reads the clock; a caller that needs "now" passes it in.

A period runs from local midnight on the 1st to local midnight on the 1st of the next month
(exclusive), so its two bounds can carry different UTC offsets across a DST change
(America/New_York in November: starts -04:00, ends -05:00). Python subtracts and compares two
datetimes of the same zone on the wall clock, so for elapsed time convert to UTC first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

_PERIOD_KEY: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
# Present in the tz database folder but not zones a client can be in.
_NOT_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One calendar month. Ordered by time; `str(period)` is its key, e.g. `2026-10`."""

    year: int
    month: int

    def __post_init__(self) -> None:
        for value in (self.year, self.month):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError("year and month must be integers")
        if not 1 <= self.year <= 9999:
            raise ValueError(f"year {self.year} is outside 1..9999")
        if not 1 <= self.month <= 12:
            raise ValueError(f"month {self.month} is outside 1..12")

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def __str__(self) -> str:
        return self.key

    def next(self) -> Period:
        if self.month == 12:
            return Period(self.year + 1, 1)
        return Period(self.year, self.month + 1)

    def previous(self) -> Period:
        if self.month == 1:
            return Period(self.year - 1, 12)
        return Period(self.year, self.month - 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def contains(self, day: date) -> bool:
        return (day.year, day.month) == (self.year, self.month)


class PeriodError(ValueError):
    """A period key that is not `YYYY-MM` within FIRST_PERIOD..LAST_PERIOD; the message says
    what is expected (an API answers it as a 422 naming its parameter)."""


#: SPEC §13: periods outside 2000-01..2099-12 are refused on every endpoint (422).
FIRST_PERIOD: Final = Period(2000, 1)
LAST_PERIOD: Final = Period(2099, 12)


def parse_period(text: str) -> Period:
    """`"2026-10"` -> `Period(2026, 10)`; anything else — not `YYYY-MM`, no such month, or
    outside 2000-01..2099-12 — is a PeriodError (a ValueError) saying what is expected."""
    match = _PERIOD_KEY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:40] + "..."
        raise PeriodError(f"period must be YYYY-MM, e.g. 2026-10; got {shown}")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise PeriodError(f"period {text!r} has no month {month:02d}; months are 01..12")
    period = Period(year, month) if year else None
    if period is None or not FIRST_PERIOD <= period <= LAST_PERIOD:
        raise PeriodError(
            f"period {text!r} is outside {FIRST_PERIOD.key}..{LAST_PERIOD.key}, "
            "the periods Tierline bills"
        )
    return period


def timezone_names() -> frozenset[str]:
    """Every IANA zone a client can be in (what `is_timezone` accepts)."""
    return _zone_names()


def is_timezone(name: object) -> bool:
    return isinstance(name, str) and name in _zone_names()


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name` (`America/New_York`, `UTC`); ValueError if there is none."""
    if not is_timezone(name):
        raise ValueError(f"unknown IANA timezone {name!r}, e.g. America/New_York or UTC")
    return ZoneInfo(name)


def period_of(instant: datetime, tz: str) -> Period:
    """The period containing `instant` (an aware datetime) on the wall clock of `tz`."""
    local = _aware(instant, "instant").astimezone(load_zone(tz))
    return Period(local.year, local.month)


def period_bounds(period: Period, tz: str) -> tuple[datetime, datetime]:
    """`(start, end)` of `period` in `tz` as aware datetimes in that zone; `end` is exclusive
    and is the start of the next period."""
    zone = load_zone(tz)
    return _local_midnight(period.first_day, zone), _local_midnight(period.next().first_day, zone)


def start_of_day(day: date, tz: str) -> datetime:
    """The first instant of `day` on the wall clock of `tz`."""
    return _local_midnight(day, load_zone(tz))


def close_due_at(period: Period, tz: str, grace_hours: float) -> datetime:
    """When a period may close automatically: its end plus `grace_hours` of elapsed time."""
    if grace_hours < 0:
        raise ValueError("grace_hours must not be negative")
    _, end = period_bounds(period, tz)
    # Add elapsed hours in UTC: wall-clock arithmetic in the zone would be off by an hour
    # whenever the grace window spans a DST change.
    return (end.astimezone(UTC) + timedelta(hours=grace_hours)).astimezone(end.tzinfo)


def is_close_due(period: Period, tz: str, grace_hours: float, now: datetime) -> bool:
    return _aware(now, "now") >= close_due_at(period, tz, grace_hours)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    # Round-trip through UTC so a midnight that does not exist (a DST jump at 00:00, as in
    # some South American zones) becomes the first instant that does, with its real offset.
    naive_midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return naive_midnight.astimezone(UTC).astimezone(zone)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES
