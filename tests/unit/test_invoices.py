"""The invoice document (SPEC §6/§7): `build_invoice` from a rating, the typed `Invoice` it
returns, and its CloudEvent. The JSON is what the API serves, the database stores and the event
carries, so it is checked to the byte, and it reads back through the model unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from services.billing.invoices import build_invoice, cloudevent
from shared.contracts.invoice import Invoice, InvoiceIssued, LateAdjustmentLine
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period
from shared.domain.rating import ClassUsage, late_adjustment_line, rate
from tests.unit.test_rating import ACME, EXAMPLE_1, agreements, base_agreement, usage, usages

STORED_ACME = ACME.with_version(3)
OCTOBER = Period(2026, 10)
ISSUED = datetime(2026, 11, 4, 4, 0, 5, 123456, tzinfo=UTC)


def invoice(
    usage_rows: list[ClassUsage],
    *adjustments: Any,
    agreement: Agreement = STORED_ACME,
    period: Period = OCTOBER,
) -> Invoice:
    return build_invoice(
        agreement=agreement,
        period=period,
        rating=rate(agreement, usage_rows),
        adjustments=list(adjustments),
        issued_at=ISSUED,
    )


def wire(document: Invoice) -> dict[str, Any]:
    return document.model_dump(mode="json")


# --- the document -------------------------------------------------------------------------------


def test_the_spec_example_3_invoice_to_the_byte() -> None:
    # Example 1 + 12 complex accounting: W = 960, scope makes it Enterprise; SPEC §7's example
    # (its classes in §3 order).
    rows = [*EXAMPLE_1, usage("accounting", "complex", 12)]
    expected = {
        "invoice_id": "acme-2026-10-1",
        "client_id": "acme",
        "period": "2026-10",
        "period_start": "2026-10-01T00:00:00-04:00",
        "period_end": "2026-11-01T00:00:00-04:00",
        "currency": "USD",
        "agreement_version": 3,
        "tier": {"name": "Enterprise", "reason": "scope"},
        "usage": {
            "items": 762,
            "weighted_units": "960",
            "by_class": [
                {"service_line": "data_entry", "complexity": "standard", "items": 150,
                 "units": 150, "weighted_units": "300"},
                {"service_line": "accounting", "complexity": "complex", "items": 12,
                 "units": 12, "weighted_units": "60"},
                {"service_line": "customer_support", "complexity": "basic", "items": 600,
                 "units": 600, "weighted_units": "600"},
            ],
        },
        "lines": [
            {"kind": "tier_fee", "description": "Enterprise tier (scope)", "quantity": "1",
             "unit_price": "90000.00", "amount": "90000.00"},
        ],
        "total": "90000.00",
        "issued_at": "2026-11-04T04:00:05Z",
    }  # fmt: skip
    built = invoice(rows)
    assert wire(built) == expected
    # Field order and text as sent: the order above, money as strings, no spaces.
    assert built.model_dump_json() == json.dumps(expected, separators=(",", ":"))
    assert orjson.dumps(wire(built)) == orjson.dumps(expected)


def test_totals_and_out_of_scope_lines() -> None:
    # Example 2: 3 complex accounting stay out of scope in Essential: 15 × 12.00 = 180.00.
    built = invoice([*EXAMPLE_1, usage("accounting", "complex", 3)])
    assert (built.tier.name, built.tier.reason) == ("Essential", "volume")
    assert (built.usage.items, built.usage.weighted_units) == (753, Decimal(915))
    assert wire(built)["lines"] == [
        {"kind": "tier_fee", "description": "Essential tier (volume)", "quantity": "1",
         "unit_price": "10000.00", "amount": "10000.00"},
        {"kind": "out_of_scope",
         "description": "accounting / complex: outside the Essential tier scope",
         "service_line": "accounting", "complexity": "complex", "quantity": "15",
         "unit_price": "12.00", "amount": "180.00"},
    ]  # fmt: skip
    assert wire(built)["total"] == "10180.00"


def test_overage_line() -> None:
    # Example 4: 3,240 complex it_support → W 16200 → Enterprise + 1200 × 7.50 overage.
    built = invoice([usage("it_support", "complex", 3240)])
    lines = [(line["kind"], line["quantity"], line["amount"]) for line in wire(built)["lines"]]
    assert lines == [("tier_fee", "1", "90000.00"), ("overage", "1200", "9000.00")]
    assert wire(built)["total"] == "99000.00"


def test_late_adjustment_lines_follow_the_rating_and_join_the_total() -> None:
    late = [
        late_adjustment_line("2026-08", Decimal("10180.00"), Decimal("10000.00"), "USD"),
        late_adjustment_line("2026-09", Decimal("10000.00"), Decimal("10929.30"), "USD"),
        late_adjustment_line("2026-09", Decimal("10000.00"), Decimal("10000.00"), "USD"),
    ]
    built = invoice(EXAMPLE_1, *late)
    lines = wire(built)["lines"]
    assert [line["kind"] for line in lines] == ["tier_fee", *["late_adjustment"] * 3]
    assert lines[1] == {
        "kind": "late_adjustment",
        "description": "Late items adjustment for 2026-08",
        "period": "2026-08",
        "quantity": "1",
        "unit_price": "180.00",
        "amount": "180.00",
    }
    assert [(line["period"], line["amount"]) for line in lines[1:]] == [
        ("2026-08", "180.00"),
        ("2026-09", "-929.30"),
        ("2026-09", "0.00"),  # a zero adjustment is still shown, never "-0.00"
    ]
    assert wire(built)["total"] == "9250.70"  # 10000.00 + 180.00 - 929.30 + 0.00
    assert isinstance(built.lines[2], LateAdjustmentLine)


def test_jpy_money_has_no_minor_digits() -> None:
    agreement = base_agreement(
        "JPY", tiers=[{"name": "Only", "up_to": 10, "fee": "1000"}], overage_rate="3"
    ).with_version(1)
    built = invoice([usage("hr", "basic", 21)], agreement=agreement)
    assert [(line["unit_price"], line["amount"]) for line in wire(built)["lines"]] == [
        ("1000", "1000"),
        ("3", "33"),
    ]
    assert wire(built)["total"] == "1033"
    assert wire(built)["period_start"] == "2026-10-01T00:00:00+00:00"  # the agreement's UTC


def test_an_empty_period_bills_the_first_tier() -> None:
    built = invoice([])
    assert wire(built)["usage"] == {"items": 0, "weighted_units": "0", "by_class": []}
    assert wire(built)["total"] == "10000.00"


# --- round trips --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(agreement=agreements(), rows=usages)
def test_the_json_reads_back_through_the_model_unchanged(
    agreement: Agreement, rows: list[ClassUsage]
) -> None:
    built = invoice(rows, agreement=agreement.with_version(1))
    text = built.model_dump_json()
    # As the database hands it back (orjson) and as a consumer parses it.
    for again in (Invoice.model_validate(orjson.loads(text)), Invoice.model_validate_json(text)):
        assert again == built
        assert again.model_dump_json() == text
    total = sum((line.amount for line in built.lines), Decimal(0))
    assert built.total == total


def test_the_cloudevent_wraps_the_invoice() -> None:
    built = invoice(EXAMPLE_1)
    event = cloudevent(built).model_dump(mode="json")
    assert {k: v for k, v in event.items() if k != "data"} == {
        "specversion": "1.0",
        "type": "bpo.invoice.issued",
        "source": "/tierline/billing",
        "id": "acme-2026-10-1",
        "subject": "acme",
        "time": "2026-11-04T04:00:05Z",
        "datacontenttype": "application/json",
    }
    assert event["data"] == wire(built)
    assert InvoiceIssued.model_validate(event) == cloudevent(built)


# --- what the model refuses ---------------------------------------------------------------------


def spec_invoice() -> dict[str, Any]:
    return wire(invoice(EXAMPLE_1))


@pytest.mark.parametrize(
    "change",
    [
        {"total": "10000.0"},  # USD carries two minor digits
        {"total": "10000"},
        {"total": 10000.0},
        {"currency": "JPY"},  # then every amount has two digits too many
        {"lines": [{"kind": "discount", "description": "x", "quantity": "1",
                    "unit_price": "1.00", "amount": "1.00"}]},
        {"lines": [{"kind": "tier_fee", "description": "x", "period": "2026-01",
                    "quantity": "1", "unit_price": "1.00", "amount": "1.00"}]},
        {"tier": {"name": "Essential", "reason": "mood"}},
        {"surprise": 1},
        {"issued_at": "2026-11-04T04:00:05"},  # no offset
    ],
)  # fmt: skip
def test_a_document_that_is_no_invoice_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Invoice.model_validate({**spec_invoice(), **change})
