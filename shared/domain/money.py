"""Exact money: ISO 4217 minor units, half-up rounding and the wire's decimal strings.

Pure and float-free. Amounts are `Decimal`; a currency decides how many minor digits an amount
carries (USD 2, JPY 0, KWD 3, CLF 4). Quantities (weighted units, line quantities) are plain
decimals with no fixed scale.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Final

# ISO 4217 List One as published 2026-01-01 (SIX Group, the maintenance agency): every active
# code with a numeric minor unit. Codes whose minor unit is "N.A." (precious metals XAU/XAG/XPD/
# XPT, bond-market units XBA..XBD, XDR, XSU, XUA, XTS for testing, XXX for "no currency")
# cannot carry an amount, so they are not billable and not listed.
ISO_4217_MINOR_UNITS: Final[dict[str, int]] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
    "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
    "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2,
    "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4, "CLP": 0, "CNY": 2,
    "COP": 2, "COU": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0, "DKK": 2,
    "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2,
    "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2,
    "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3,
    "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2,
    "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2,
    "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2,
    "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2, "MVR": 2, "MWK": 2, "MXN": 2,
    "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2,
    "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2,
    "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2,
    "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2,
    "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2,
    "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0,
    "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4, "UZS": 2, "VED": 2, "VES": 2,
    "VND": 0, "VUV": 0, "WST": 2, "XAD": 2, "XAF": 0, "XCD": 2, "XCG": 2, "XOF": 0,
    "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
}  # fmt: skip

# Withdrawn from List One in the last few years but still on agreements signed before
# (Bulgaria joined the euro on 2026-01-01, Croatia on 2023-01-01, ...): kept so an existing
# agreement stays valid and billable.
RECENTLY_WITHDRAWN_MINOR_UNITS: Final[dict[str, int]] = {
    "ANG": 2, "BGN": 2, "CUC": 2, "HRK": 2, "SLL": 2, "ZWL": 2,
}  # fmt: skip

_MINOR_UNITS: Final = {**RECENTLY_WITHDRAWN_MINOR_UNITS, **ISO_4217_MINOR_UNITS}

#: Context precision for billing arithmetic: enough digits that sums and products of any
#: realistic quantities and prices are exact, never rounded by the decimal context.
EXACT_PRECISION: Final = 200


class UnknownCurrencyError(KeyError, ValueError):
    """A code that is not a billable ISO 4217 currency.

    A KeyError (it is a failed lookup) and a ValueError (so pydantic validators report it).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in _MINOR_UNITS


def minor_units(currency: str) -> int:
    """Digits after the decimal point for `currency` (USD 2, JPY 0, KWD 3, CLF 4)."""
    try:
        return _MINOR_UNITS[currency]
    except (KeyError, TypeError):
        raise UnknownCurrencyError(
            f"unknown currency {currency!r}: expected an ISO 4217 code such as USD, EUR or JPY"
        ) from None


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up (away from zero on a tie) to the currency's minor unit.

    The result always carries exactly the minor digits (`Decimal("5")` in USD is `5.00`) and is
    never negative zero.
    """
    _require_finite(amount)
    exponent = Decimal(1).scaleb(-minor_units(currency))
    with localcontext() as ctx:
        ctx.prec = max(EXACT_PRECISION, amount.adjusted() + 2 + minor_units(currency))
        rounded = amount.quantize(exponent, rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def format_money(amount: Decimal, currency: str) -> str:
    """The wire form of an amount: exactly the currency's minor digits, never an exponent.

    An amount with more digits than the currency allows is rounded half-up first.
    """
    return f"{round_money(amount, currency):f}"


def format_decimal(value: Decimal | int) -> str:
    """A plain decimal string for quantities: `960`, `7.5`, `0` — no exponent, no trailing
    zeros, never `-0`."""
    number = Decimal(value)
    _require_finite(number)
    if number.is_zero():
        return "0"
    text = f"{number:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _require_finite(value: Decimal) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"expected a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
