"""The wire forms of SPEC's scalar values, as pydantic types the typed documents share.

Values stay `Decimal` and `datetime` in Python; only the JSON is text (SPEC §7, §13):

- `Plain`: weighted units, quantities — a plain decimal string, no exponent, no trailing
  fractional zeros (`"5"`, `"2.5"`).
- `Fixed`: money and fractions — a decimal string with exactly the digits the value carries
  (`Decimal("90000.00")` is `"90000.00"`, JPY `"1294689"`). A builder rounds money with
  `round_money`; a document checks its amounts carry its currency's digits (`require_minor_digits`).
- `UtcTimestamp`: `2026-11-04T04:00:05Z` (whole seconds, UTC).
- `utc_instant`: `2026-11-04T04:00:05Z`, `2026-11-04T04:00:05.25Z` — the exact instant in UTC,
  fractional seconds only when non-zero (SPEC §13 "Items"; PostgreSQL's export writes the same
  form, `services/metering/items_store.py`).
- `OffsetTimestamp`: `2026-10-01T00:00:00-04:00` (the instant in its own zone's offset).

`Document` is the base of every typed document, `CloudEvent` of every event Tierline publishes
(the invoice's, the usage alert's): each names its `type`, `source` and `data`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Generic, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)

from shared.domain.money import format_decimal, minor_units

DECIMAL_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"
_DECIMAL_SCHEMA: Final = {"type": "string", "pattern": DECIMAL_PATTERN}


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value}")
    return value.copy_abs() if value.is_zero() else value  # never "-0.00"


def _fixed(value: Decimal) -> str:
    return f"{value:f}"


def utc_timestamp(instant: datetime) -> str:
    """`instant` in UTC, whole seconds, with `Z`."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_instant(instant: datetime) -> str:
    """`instant` in UTC with `Z`, to the microsecond: fractional seconds only when non-zero,
    without trailing zeros (`...T10:00:00Z`, `...T10:00:00.25Z`). An export writes millions:
    an instant already in UTC (as asyncpg reads them) is not converted again."""
    if instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    text = instant.isoformat()[:-6]  # without "+00:00"
    return (text.rstrip("0") if instant.microsecond else text) + "Z"


def _offset_timestamp(instant: datetime) -> str:
    return instant.isoformat()


Plain = Annotated[
    Decimal,
    AfterValidator(_finite),
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema(_DECIMAL_SCHEMA),
]
Fixed = Annotated[
    Decimal,
    AfterValidator(_finite),
    PlainSerializer(_fixed, return_type=str),
    WithJsonSchema(_DECIMAL_SCHEMA),
]
UtcTimestamp = Annotated[
    AwareDatetime,
    PlainSerializer(utc_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
OffsetTimestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_offset_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def require_minor_digits(currency: str, amounts: Iterable[Decimal]) -> None:
    """Raise ValueError unless every amount carries exactly `currency`'s minor digits."""
    exponent = -minor_units(currency)
    for amount in amounts:
        if amount.as_tuple().exponent != exponent:
            raise ValueError(f"{amount} does not carry the {-exponent} minor digits of {currency}")


class Priced(Protocol):
    """A line of money: what an invoice and a note hold."""

    @property
    def unit_price(self) -> Decimal: ...

    @property
    def amount(self) -> Decimal: ...


def require_money_in_currency(currency: str, lines: Iterable[Priced], total: Decimal) -> None:
    """A billing document's money (every line's unit price and amount, and the total) carries
    exactly `currency`'s minor digits; ValueError otherwise."""
    amounts = [a for line in lines for a in (line.unit_price, line.amount)]
    require_minor_digits(currency, [*amounts, total])


class Document(BaseModel):
    """A wire document: immutable, and unknown fields are an error."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


DataT = TypeVar("DataT", bound=Document)


class CloudEvent(Document, Generic[DataT]):
    """A CloudEvents 1.0 envelope (structured mode); a subclass fixes `type` and `source`."""

    specversion: Literal["1.0"] = "1.0"
    type: str
    source: str
    id: str
    subject: str
    time: UtcTimestamp
    datacontenttype: Literal["application/json"] = "application/json"
    data: DataT
