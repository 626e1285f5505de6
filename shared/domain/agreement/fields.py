"""The agreement's vocabulary (SPEC §3): service lines, complexities, bounds, and the scalar field
types every part of an agreement is made of. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import total_ordering
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeGuard

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.domain.money import is_currency
from shared.domain.periods import is_timezone

ServiceLine: TypeAlias = Literal[
    "data_entry", "accounting", "hr", "customer_support", "it_support", "procurement"
]
Complexity: TypeAlias = Literal["basic", "standard", "complex"]

#: Service lines in their canonical order (invoice lines and listings follow it).
SERVICE_LINES: Final[tuple[ServiceLine, ...]] = (
    "data_entry",
    "accounting",
    "hr",
    "customer_support",
    "it_support",
    "procurement",
)
#: Complexities, ascending.
COMPLEXITIES: Final[tuple[Complexity, ...]] = ("basic", "standard", "complex")

#: Fields a rule condition may test; `attributes.<key>` besides.
CONDITION_FIELDS: Final = ("queue", "title", "source", "tags", "units", "handling_seconds")
ATTRIBUTE_PREFIX: Final = "attributes."
OPERATORS: Final = ("in", "regex", "gte", "gt", "lte", "lt", "contains")
COMPARISONS: Final = ("gte", "gt", "lte", "lt")
#: Rule ids the classifier itself reports; a client rule may not take them (traceability).
DEFAULT_RULE_ID: Final = "default"
BUILTIN_RULE_PREFIX: Final = "builtin:"

#: A client id (SPEC §2, §3), unanchored: work items, agreements and every path parameter use
#: this one definition (`shared.contracts.workitems` builds on this module, never the other way
#: round).
CLIENT_ID_PATTERN: Final = r"[a-z0-9][a-z0-9_-]{0,63}"
_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_DECIMAL_TEXT: Final = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_MONEY_TEXT: Final = re.compile(r"[0-9]+(\.[0-9]+)?")
_DATE_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

#: SPEC §3/§13 bounds.
MAX_DECIMAL: Final = Decimal(10) ** 12
MAX_DECIMAL_PLACES: Final = 6
MAX_RULES: Final = 500
MAX_PATTERN_LENGTH: Final = 1_000
#: Agreement bodies (JSON or YAML) larger than this are refused (413) before parsing.
MAX_BODY_BYTES: Final = 1024 * 1024
#: The largest encoded agreement the `agreements` topic carries (the broker's record limit,
#: with room for key, headers and batch framing): a larger one is refused at the PUT (413).
MAX_WIRE_BYTES: Final = 1_000_000
#: The deepest nesting of lists and mappings a body may have (a real agreement needs ~8).
MAX_NESTING: Final = 32


# --- service classes ----------------------------------------------------------------------------


@total_ordering
@dataclass(frozen=True, slots=True)
class ServiceClass:
    """A (service line, complexity) pair; sorts in the §3 order (line, then complexity)."""

    service_line: ServiceLine
    complexity: Complexity

    def __post_init__(self) -> None:
        if self.service_line not in SERVICE_LINES:
            raise ValueError(f"unknown service line {self.service_line!r}")
        if self.complexity not in COMPLEXITIES:
            raise ValueError(f"unknown complexity {self.complexity!r}")

    @property
    def sort_key(self) -> tuple[int, int]:
        return SERVICE_LINES.index(self.service_line), COMPLEXITIES.index(self.complexity)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ServiceClass):
            return NotImplemented
        return self.sort_key < other.sort_key


# --- errors -----------------------------------------------------------------------------------

Loc: TypeAlias = tuple[str | int, ...]


def fail(message: str) -> PydanticCustomError:
    # The message travels as context so braces in it ("{contains: x}") are not a template.
    return PydanticCustomError("agreement", "{reason}", {"reason": message})


def invalid(title: str, errors: Sequence[tuple[Loc, str, Any]]) -> ValidationError:
    """One ValidationError carrying several errors, each at its own `loc` below the caller."""
    return ValidationError.from_exception_data(
        title,
        [InitErrorDetails(type=fail(msg), loc=loc, input=value) for loc, msg, value in errors],
    )


# --- scalar field types -------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal:
    """A JSON number or a decimal string, as an exact Decimal."""
    if isinstance(value, bool):
        raise fail("must be a number, not a boolean")
    if isinstance(value, int):
        return _bounded(Decimal(value))
    if isinstance(value, float):
        value = Decimal(repr(value))  # the literal the float came from, not its binary noise
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise fail("must be a finite number")
        return _bounded(value)
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        return _bounded(Decimal(value))
    raise fail(f'must be a number or a decimal string such as "2.5"; got {shown(value)}')


def _bounded(number: Decimal) -> Decimal:
    """SPEC §13: at most 10^12 in magnitude, at most 6 decimal places (trailing zeros aside).
    Exact comparisons only: no context arithmetic, which overflows on `1e2000000`."""
    if number.copy_abs() > MAX_DECIMAL:
        raise fail("must be at most 10^12 (1000000000000)")
    if _significant_places(number) > MAX_DECIMAL_PLACES:
        raise fail(f"must have at most {MAX_DECIMAL_PLACES} decimal places")
    return number


def _significant_places(number: Decimal) -> int:
    """Decimal places without trailing zeros: 2.50 has 1, 1e-7 has 7, 1e5 has 0."""
    _sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int) or not any(digits):
        return 0
    trailing = len(digits) - len(bytes(digits).rstrip(b"\x00"))
    return max(0, -(exponent + trailing))


def shown(value: Any, limit: int = 40) -> str:
    """`value` as an error message quotes it: short, whatever its size; a number as the client
    wrote it (`90.5`, not the `Decimal('90.5')` JSON was read into)."""
    text = str(value) if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _non_negative_decimal(value: Any) -> Decimal:
    number = to_decimal(value)
    if number < 0:
        raise fail("must not be negative")
    return number


def _positive_decimal(value: Any) -> Decimal:
    number = to_decimal(value)
    if number <= 0:
        raise fail("must be greater than 0")
    return number


def _money_text(value: Any) -> Decimal:
    """A fee or rate: a non-negative decimal string (never a JSON number, so no float ever
    rounds an amount). The currency's digit limit is checked on the whole agreement."""
    if isinstance(value, str):
        if _MONEY_TEXT.fullmatch(value):
            return _bounded(Decimal(value))
        if value.startswith("-") and _MONEY_TEXT.fullmatch(value[1:]):
            raise fail("must not be negative")
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        raise fail(f'must be a decimal string such as "10000.00", not the number {shown(value)}')
    raise fail(f'must be a decimal string such as "10000.00"; got {shown(value)}')


def is_client_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a whole client id."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


def _client_id(value: Any) -> str:
    if not is_client_id(value):
        raise fail(
            "must be 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return value


def _currency(value: Any) -> str:
    if is_currency(value):
        return str(value)
    if isinstance(value, str) and is_currency(value.upper()):
        raise fail(f"ISO 4217 codes are upper case: {value.upper()!r}, not {value!r}")
    raise fail(
        f"unknown currency {shown(value)}: expected an ISO 4217 code such as USD, EUR or JPY"
    )


def _timezone(value: Any) -> str:
    if is_timezone(value):
        return str(value)
    raise fail(f"unknown IANA timezone {shown(value)}: expected e.g. America/New_York or UTC")


def _non_blank(value: Any) -> str:
    if not isinstance(value, str):
        raise fail("must be a string")
    if not value.strip():
        raise fail("must not be blank")
    if len(value) > 128:
        raise fail("must be at most 128 characters")
    return value


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise fail(f"must be a date YYYY-MM-DD; got {shown(value)}")


# Decimal and date fields parse in a BeforeValidator (not a PlainValidator) so pydantic keeps
# its own serializer for them and model_dump_json() stays warning-free.
Quantity = Annotated[Decimal, BeforeValidator(_non_negative_decimal)]
PositiveQuantity = Annotated[Decimal, BeforeValidator(_positive_decimal)]
MoneyText = Annotated[Decimal, BeforeValidator(_money_text)]
ClientId = Annotated[str, PlainValidator(_client_id)]
CurrencyCode = Annotated[str, PlainValidator(_currency)]
TimezoneName = Annotated[str, PlainValidator(_timezone)]
DateValue = Annotated[date, BeforeValidator(_date)]
NonBlank = Annotated[str, PlainValidator(_non_blank)]


class AgreementPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
