"""SPEC §8's projection: a period's usage carried to its end from the run rate so far. Pure.

The one definition that billing's forecast (`GET /v1/forecast`) and the console's usage cards
both use, so the two never disagree. Nothing here reads the clock: `now` is passed in.

Elapsed time is measured on UTC instants in whole microseconds (so a DST change inside the
month counts as the hour it really is), clamped to the period. Every class's items, units and
handling seconds are scaled by `period length / elapsed` and rounded half-up to integers, in
exact integer arithmetic. Before `MIN_ELAPSED_FOR_PROJECTION` has passed (at the period's very
start, or before it begins) there is no run rate worth extrapolating, so the projection is the
usage so far; once the period has ended the factor is 1 and the projection is the usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from shared.domain.rating import ClassUsage, usage_by_class

#: Less of the period than this gives no run rate: the projection is the usage so far.
MIN_ELAPSED_FOR_PROJECTION: Final = timedelta(hours=1)

_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far into its period `now` is: whole microseconds, 0 <= elapsed <= length."""

    elapsed: int
    length: int

    @property
    def extrapolates(self) -> bool:
        """Whether enough of the period has passed to carry its run rate to the end."""
        return self.elapsed >= MIN_ELAPSED_FOR_PROJECTION // _MICROSECOND

    def fraction(self, places: int) -> Decimal:
        """elapsed / length rounded half-up to `places` decimals (0 for an empty period)."""
        scale = 10**places
        units = divide_half_up(self.elapsed * scale, self.length) if self.length > 0 else 0
        return Decimal(units).scaleb(-places)

    def scale(self, count: int) -> int:
        """`count` carried to the period's end (unchanged while there is no run rate)."""
        if not self.extrapolates:
            return count
        return divide_half_up(count * self.length, self.elapsed)


def progress(start: datetime, end: datetime, now: datetime) -> Progress:
    """How much of [start, end) has passed at `now`, on UTC instants. All three must be aware."""
    for name, moment in (("start", start), ("end", end), ("now", now)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")
    utc_start = start.astimezone(UTC)
    length = max((end.astimezone(UTC) - utc_start) // _MICROSECOND, 0)
    elapsed = min(max((now.astimezone(UTC) - utc_start) // _MICROSECOND, 0), length)
    return Progress(elapsed, length)


def project_usage(usage: Iterable[ClassUsage], at: Progress) -> list[ClassUsage]:
    """Each class's usage carried to the period's end, one entry per class in §3 order (several
    entries of one class are added up first, as the rating does, then scaled once)."""
    return [
        ClassUsage(row.service_class, at.scale(row.items), at.scale(row.units),
                   at.scale(row.handling_seconds))
        for row in usage_by_class(usage)
    ]  # fmt: skip


def divide_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up, for numerator >= 0 and denominator > 0."""
    return (2 * numerator + denominator) // (2 * denominator)
