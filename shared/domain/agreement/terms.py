"""The contract terms beyond the tier ladder (SPEC §11, §13): `service_levels` (a pool of the tier
fee at risk, a business calendar, ordered levels) and `commitment` (an annual minimum). Pure.

Both sections are optional; without them an agreement bills as §6 alone. Validation names the
field that is wrong: pool shares over 100 % in total, a business clock without a calendar, a
holiday outside the periods Tierline bills, a level id used twice.
"""

from __future__ import annotations

import re
from datetime import date, time
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, PlainValidator, model_validator

from shared.domain.agreement.fields import (
    COMPLEXITIES,
    AgreementPart,
    Complexity,
    DateValue,
    Loc,
    MoneyText,
    NonBlank,
    PositiveQuantity,
    ServiceClass,
    ServiceLine,
    fail,
    invalid,
    shown,
    to_decimal,
)
from shared.domain.business_time import WEEKDAYS, BusinessCalendar
from shared.domain.money import format_decimal, format_money
from shared.domain.periods import FIRST_PERIOD, LAST_PERIOD

_HUNDRED: Final = Decimal(100)
#: A calendar's wall-clock time "HH:MM", 00:00 to 24:00 (unanchored; the OpenAPI schema uses it).
CLOCK_PATTERN: Final = r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00"
_CLOCK_TEXT: Final = re.compile(CLOCK_PATTERN)
#: A plain decimal: no sign, no exponent (SPEC §13).
_PERCENT_TEXT: Final = re.compile(r"[0-9]+(\.[0-9]+)?")
#: The most levels one agreement may have.
MAX_LEVELS: Final = 100
#: "24:00" ends a day at the midnight that follows it.
END_OF_DAY: Final = "24:00"


def _percent(value: Any) -> Decimal:
    """A percent: a decimal string 0..100 (SPEC §13), never a JSON number."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        raise fail(f'must be a decimal string such as "95", not the number {shown(value)}')
    if not isinstance(value, str) or not _PERCENT_TEXT.fullmatch(value):
        raise fail(f'must be a decimal string 0..100 such as "95" or "99.5"; got {shown(value)}')
    number = to_decimal(value)
    if not 0 <= number <= _HUNDRED:
        raise fail("must be between 0 and 100")
    return number


def _one_service_line(value: Any) -> Any:
    """SPEC §13: each level names exactly one service line (a list is not a choice of several)."""
    if isinstance(value, list | tuple):
        raise fail(f"a level names exactly one service line, not a list; got {shown(value)}")
    return value


def _clock(value: Any) -> str:
    if isinstance(value, str) and _CLOCK_TEXT.fullmatch(value):
        return value
    raise fail(f'must be a wall-clock time "HH:MM" (00:00 to 24:00); got {shown(value)}')


def _complexities(value: Any) -> tuple[Complexity, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise fail(f"must be a non-empty list of {', '.join(COMPLEXITIES)}")
    unknown = [c for c in value if c not in COMPLEXITIES]
    if unknown:
        raise fail(f"unknown complexity {shown(unknown[0])}; expected {', '.join(COMPLEXITIES)}")
    return tuple(c for c in COMPLEXITIES if c in value)  # canonical order, no repeats


def _days(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise fail(f"must be a non-empty list of {', '.join(WEEKDAYS)}")
    unknown = [d for d in value if d not in WEEKDAYS]
    if unknown:
        raise fail(f"unknown day {shown(unknown[0])}; expected {', '.join(WEEKDAYS)}")
    return tuple(d for d in WEEKDAYS if d in value)


Percent = Annotated[Decimal, BeforeValidator(_percent)]
ClockText = Annotated[str, PlainValidator(_clock)]
Complexities = Annotated[
    tuple[Complexity, ...], PlainValidator(_complexities), PlainSerializer(list)
]
Days = Annotated[tuple[str, ...], PlainValidator(_days), PlainSerializer(list)]


class Calendar(AgreementPart):
    """Working days and hours in the agreement's timezone, minus holidays (local dates)."""

    days: Days
    hours: tuple[ClockText, ClockText]
    holidays: tuple[DateValue, ...] = ()

    @model_validator(mode="after")
    def _hours_and_holidays(self) -> Calendar:
        errors: list[tuple[Loc, str, Any]] = []
        start, end = self.hours
        if start == END_OF_DAY:
            errors.append((("hours", 0), "a working day cannot start at 24:00", start))
        elif end != END_OF_DAY and end <= start:
            errors.append((("hours", 1), f"must be after the start, {start}", end))
        for index, day in enumerate(self.holidays):
            if not FIRST_PERIOD.first_day <= day <= date(LAST_PERIOD.year, 12, 31):
                message = (
                    f"lies outside the periods Tierline bills "
                    f"({FIRST_PERIOD.key}..{LAST_PERIOD.key})"
                )
                errors.append((("holidays", index), message, day.isoformat()))
        if errors:
            raise invalid("Calendar", errors)
        return self

    def in_zone(self, timezone: str) -> BusinessCalendar:
        start, end = self.hours
        return BusinessCalendar(
            days=frozenset(WEEKDAYS.index(d) for d in self.days),
            start=time.fromisoformat(start),
            end=None if end == END_OF_DAY else time.fromisoformat(end),
            holidays=frozenset(self.holidays),
            timezone=timezone,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "hours": list(self.hours),
            "holidays": [day.isoformat() for day in self.holidays],
        }


class ServiceLevel(AgreementPart):
    """One level: items of a class turned around within a time, a target share of them, and the
    share of the pool its miss credits."""

    id: NonBlank
    service_line: Annotated[ServiceLine, BeforeValidator(_one_service_line)]
    #: None: every complexity.
    complexity: Complexities | None = None
    within_hours: PositiveQuantity
    clock: Literal["elapsed", "business"] = "elapsed"
    target_percent: Percent
    pool_percent: Percent

    def selects(self, service_class: ServiceClass) -> bool:
        return service_class.service_line == self.service_line and (
            self.complexity is None or service_class.complexity in self.complexity
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service_line": self.service_line,
            "complexity": None if self.complexity is None else list(self.complexity),
            "within_hours": format_decimal(self.within_hours),
            "clock": self.clock,
            "target_percent": format_decimal(self.target_percent),
            "pool_percent": format_decimal(self.pool_percent),
        }


class ServiceLevels(AgreementPart):
    """The `service_levels` section: `at_risk_percent` of the period's tier fee is the pool that
    the credits of missed levels draw on, each its `pool_percent`."""

    at_risk_percent: Percent
    calendar: Calendar | None = None
    levels: tuple[ServiceLevel, ...] = Field(min_length=1, max_length=MAX_LEVELS)

    @model_validator(mode="after")
    def _levels_fit(self) -> ServiceLevels:
        errors: list[tuple[Loc, str, Any]] = []
        seen: set[str] = set()
        for index, level in enumerate(self.levels):
            if level.id in seen:
                errors.append(
                    (("levels", index, "id"), f"duplicate level id {level.id!r}", level.id)
                )
            seen.add(level.id)
            if level.clock == "business" and self.calendar is None:
                message = "a business clock needs the section's calendar"
                errors.append((("levels", index, "clock"), message, level.clock))
        pooled = sum((level.pool_percent for level in self.levels), Decimal(0))
        if pooled > _HUNDRED:
            message = f"pool_percent adds up to {format_decimal(pooled)}; at most 100"
            errors.append((("levels",), message, format_decimal(pooled)))
        if errors:
            raise invalid("ServiceLevels", errors)
        return self

    def to_wire(self) -> dict[str, Any]:
        return {
            "at_risk_percent": format_decimal(self.at_risk_percent),
            "calendar": None if self.calendar is None else self.calendar.to_wire(),
            "levels": [level.to_wire() for level in self.levels],
        }


class Commitment(AgreementPart):
    """A yearly minimum spend, billed monthly and trued up on a contract year's 12th period."""

    annual_minimum: MoneyText

    def to_wire(self, currency: str) -> dict[str, Any]:
        return {"annual_minimum": format_money(self.annual_minimum, currency)}
