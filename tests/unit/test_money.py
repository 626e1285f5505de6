from decimal import Decimal

import pytest

from shared.domain.money import (
    ISO_4217_MINOR_UNITS,
    UnknownCurrencyError,
    format_decimal,
    format_money,
    is_currency,
    minor_units,
    round_money,
)


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("INR", 2), ("CHF", 2), ("BRL", 2),
        ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0), ("XOF", 0),
        ("BHD", 3), ("KWD", 3), ("OMR", 3), ("JOD", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
        ("CLF", 4), ("UYW", 4),
    ],
)  # fmt: skip
def test_minor_units(code: str, digits: int) -> None:
    assert minor_units(code) == digits
    assert is_currency(code)


def test_table_is_the_whole_active_list() -> None:
    assert len(ISO_4217_MINOR_UNITS) >= 150
    assert all(
        len(code) == 3 and code.isalpha() and code.isupper() for code in ISO_4217_MINOR_UNITS
    )
    assert set(ISO_4217_MINOR_UNITS.values()) == {0, 2, 3, 4}


@pytest.mark.parametrize("code", ["XYZ", "usd", "US", "", "XAU", "XXX", "XTS"])
def test_unknown_currency_is_both_key_and_value_error(code: str) -> None:
    with pytest.raises(KeyError):
        minor_units(code)
    with pytest.raises(ValueError, match="unknown currency"):
        minor_units(code)
    with pytest.raises(UnknownCurrencyError):
        round_money(Decimal(1), code)
    assert not is_currency(code)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "USD", "0.13"),
        ("0.124", "USD", "0.12"),
        ("0.135", "USD", "0.14"),  # half-up, not banker's rounding (which gives 0.14 too)
        ("0.145", "USD", "0.15"),  # banker's would give 0.14
        ("-0.125", "USD", "-0.13"),  # ties go away from zero
        ("1294688.5", "JPY", "1294689"),
        ("1294689.4999", "JPY", "1294689"),
        ("1.0005", "KWD", "1.001"),
        ("0.00005", "CLF", "0.0001"),
        ("5", "USD", "5.00"),
    ],
)
def test_round_money_half_up(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    assert str(rounded) == expected


def test_round_money_never_negative_zero() -> None:
    assert str(round_money(Decimal("-0.001"), "USD")) == "0.00"
    assert format_money(Decimal("-0.004"), "USD") == "0.00"
    assert format_money(Decimal("-0.4"), "JPY") == "0"


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal("-929.3"), "USD", "-929.30"),
        (Decimal("1294689"), "JPY", "1294689"),
        (Decimal("1E+3"), "USD", "1000.00"),
        (Decimal("1E+30"), "EUR", "1" + "0" * 30 + ".00"),
        (Decimal("90000"), "USD", "90000.00"),
        (Decimal("7.5"), "BHD", "7.500"),
        (Decimal("0"), "CLF", "0.0000"),
        (Decimal("12.345"), "USD", "12.35"),
    ],
)
def test_format_money(amount: Decimal, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("9.6E+2"), "960"),
        (Decimal("960"), "960"),
        (Decimal("7.50"), "7.5"),
        (Decimal("0.000"), "0"),
        (Decimal("-0"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-2.50"), "-2.5"),
        (Decimal("1200.0"), "1200"),
        (Decimal("1E+25"), "1" + "0" * 25),
        (5, "5"),
        (0, "0"),
    ],
)
def test_format_decimal(value: Decimal | int, expected: str) -> None:
    assert format_decimal(value) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_non_finite_is_refused(value: Decimal) -> None:
    with pytest.raises(ValueError):
        format_decimal(value)
    with pytest.raises(ValueError):
        round_money(value, "USD")
