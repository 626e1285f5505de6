import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts.invoice import invoice_line
from shared.domain.agreement.agreement import Agreement, load_agreement_yaml, parse_agreement
from shared.domain.agreement.fields import (
    COMPLEXITIES,
    SERVICE_LINES,
    Complexity,
    ServiceClass,
    ServiceLine,
)
from shared.domain.money import minor_units
from shared.domain.rating import (
    ClassUsage,
    InvoiceLine,
    ThresholdAlert,
    decide_tier,
    late_adjustment_line,
    rate,
    threshold_alerts,
    weighted_units,
)
from tests.spec_example import SPEC_YAML

ACME = load_agreement_yaml(SPEC_YAML)
SURCHARGE = load_agreement_yaml(SPEC_YAML.replace("mode: upgrade", "mode: surcharge"))


def usage(
    line: ServiceLine, complexity: Complexity, items: int, units: int | None = None
) -> ClassUsage:
    return ClassUsage(ServiceClass(line, complexity), items, items if units is None else units)


EXAMPLE_1 = [usage("customer_support", "basic", 600), usage("data_entry", "standard", 150)]


def wire(lines: tuple[InvoiceLine, ...], currency: str = "USD") -> list[dict[str, Any]]:
    return [invoice_line(line, currency).model_dump(mode="json") for line in lines]


# --- the worked examples of SPEC §6 ---------------------------------------------------------------


def test_example_1_volume() -> None:
    rating = rate(ACME, EXAMPLE_1)
    assert rating.decision.weighted_units == 900
    assert rating.decision.tier.name == "Essential"
    assert rating.decision.reason == "volume"
    assert wire(rating.lines) == [
        {"kind": "tier_fee", "description": "Essential tier (volume)", "quantity": "1",
         "unit_price": "10000.00", "amount": "10000.00"},
    ]  # fmt: skip
    assert f"{rating.total:f}" == "10000.00"


def test_example_2_below_min_items_is_charged_out_of_scope() -> None:
    rating = rate(ACME, [*EXAMPLE_1, usage("accounting", "complex", 3)])
    decision = rating.decision
    assert decision.weighted_units == 915
    assert (decision.tier.name, decision.reason) == ("Essential", "volume")
    assert (decision.volume_index, decision.scope_index) == (0, 0)
    assert wire(rating.lines)[1] == {
        "kind": "out_of_scope",
        "description": "accounting / complex: outside the Essential tier scope",
        "service_line": "accounting",
        "complexity": "complex",
        "quantity": "15",
        "unit_price": "12.00",
        "amount": "180.00",
    }
    assert len(rating.lines) == 2
    assert f"{rating.total:f}" == "10180.00"


def test_example_3_scope_upgrades_to_enterprise() -> None:
    rating = rate(ACME, [*EXAMPLE_1, usage("accounting", "complex", 12)])
    decision = rating.decision
    assert decision.weighted_units == 960
    assert (decision.volume_index, decision.scope_index, decision.tier_index) == (0, 2, 2)
    assert (decision.tier.name, decision.reason) == ("Enterprise", "scope")
    assert decision.out_of_scope == ()
    assert wire(rating.lines) == [
        {"kind": "tier_fee", "description": "Enterprise tier (scope)", "quantity": "1",
         "unit_price": "90000.00", "amount": "90000.00"},
    ]  # fmt: skip
    assert f"{rating.total:f}" == "90000.00"


def test_example_4_overage_above_the_top_tier() -> None:
    rating = rate(ACME, [usage("it_support", "complex", 3240)])
    assert rating.decision.weighted_units == 16200
    assert (rating.decision.tier.name, rating.decision.reason) == ("Enterprise", "volume")
    assert wire(rating.lines) == [
        {"kind": "tier_fee", "description": "Enterprise tier (volume)", "quantity": "1",
         "unit_price": "90000.00", "amount": "90000.00"},
        {"kind": "overage", "description": "Overage above 15000 weighted units",
         "quantity": "1200", "unit_price": "7.50", "amount": "9000.00"},
    ]  # fmt: skip
    assert f"{rating.total:f}" == "99000.00"


def test_example_5_units_basis() -> None:
    data_entry = ServiceClass("data_entry", "standard")
    assert weighted_units(ACME.pricing, data_entry, 1, 250) == 500
    assert weighted_units(ACME.pricing, ServiceClass("hr", "standard"), 1, 250) == 2
    decision = decide_tier(ACME.pricing, [usage("data_entry", "standard", 1, 250)])
    assert decision.weighted_units == 500
    assert decision.classes[0].weighted_units == 500


# --- more of §6 ---------------------------------------------------------------------------------


def test_no_usage_bills_the_first_tier() -> None:
    rating = rate(ACME, [])
    assert rating.decision.weighted_units == 0
    assert rating.decision.tier.name == "Essential"
    assert f"{rating.total:f}" == "10000.00"


def test_at_exactly_up_to_stays_in_the_tier() -> None:
    assert decide_tier(ACME.pricing, [usage("customer_support", "basic", 1000)]).tier.name == (
        "Essential"
    )
    assert decide_tier(ACME.pricing, [usage("customer_support", "basic", 1001)]).tier.name == (
        "Professional"
    )
    top = rate(ACME, [usage("customer_support", "basic", 15000)])
    assert [line.kind for line in top.lines] == ["tier_fee"]  # overage of 0 is no line


def test_surcharge_keeps_the_volume_tier_and_charges_scope() -> None:
    rating = rate(SURCHARGE, [*EXAMPLE_1, usage("accounting", "complex", 12)])
    decision = rating.decision
    assert (decision.volume_index, decision.scope_index, decision.tier_index) == (0, 2, 0)
    assert (decision.tier.name, decision.reason) == ("Essential", "volume")
    assert wire(rating.lines) == [
        {"kind": "tier_fee", "description": "Essential tier (volume)", "quantity": "1",
         "unit_price": "10000.00", "amount": "10000.00"},
        {"kind": "out_of_scope", "description": "accounting / complex: outside the Essential "
         "tier scope", "service_line": "accounting", "complexity": "complex",
         "quantity": "60", "unit_price": "12.00", "amount": "720.00"},
    ]  # fmt: skip
    assert f"{rating.total:f}" == "10720.00"


def test_out_of_scope_lines_follow_the_class_order() -> None:
    rows = [
        usage("procurement", "complex", 2),
        usage("hr", "complex", 1),
        usage("accounting", "complex", 1),
        usage("accounting", "standard", 4),
        usage("customer_support", "basic", 10),
    ]
    rating = rate(SURCHARGE, rows)
    kinds = [(line.kind, line.service_line, line.complexity) for line in rating.lines]
    assert kinds == [
        ("tier_fee", None, None),
        ("out_of_scope", "accounting", "standard"),
        ("out_of_scope", "accounting", "complex"),
        ("out_of_scope", "hr", "complex"),
        ("out_of_scope", "procurement", "complex"),
    ]
    assert [line.quantity for line in rating.lines[1:]] == [8, 5, 5, 10]


def test_a_class_no_tier_covers_forces_the_last_tier_and_stays_out_of_scope() -> None:
    text = SPEC_YAML.replace("scope: all}", "scope: {data_entry: all, customer_support: all}}")
    agreement = load_agreement_yaml(text)
    rating = rate(agreement, [usage("customer_support", "basic", 100), usage("hr", "complex", 10)])
    assert (rating.decision.tier.name, rating.decision.reason) == ("Enterprise", "scope")
    assert [(line.kind, line.service_line) for line in rating.lines] == [
        ("tier_fee", None),
        ("out_of_scope", "hr"),
    ]
    assert rating.lines[1].quantity == 50
    assert f"{rating.total:f}" == "90600.00"


def test_rows_of_one_class_are_added_up() -> None:
    split = [usage("accounting", "complex", 6), usage("accounting", "complex", 6), *EXAMPLE_1]
    assert decide_tier(ACME.pricing, split).tier.name == "Enterprise"


def base_agreement(currency: str, **pricing: Any) -> Agreement:
    return parse_agreement(
        {"client_id": "c", "currency": currency,
         "pricing": {"weights": {"basic": 1, "standard": 1, "complex": 1}, **pricing}}
    )  # fmt: skip


def test_half_up_rounding_of_a_line() -> None:
    agreement = base_agreement(
        "USD",
        weights={"basic": "0.125", "standard": 1, "complex": 1},
        tiers=[{"name": "Only", "up_to": None, "fee": "0", "scope": {"hr": "all"}}],
        scope_policy={"out_of_scope_rate": "1.00"},
    )
    rating = rate(agreement, [usage("accounting", "basic", 1)])
    assert wire(rating.lines)[1]["amount"] == "0.13"
    assert wire(rating.lines)[1]["quantity"] == "0.125"
    assert f"{rating.total:f}" == "0.13"


def test_jpy_amounts_are_whole_yen() -> None:
    agreement = base_agreement(
        "JPY",
        weights={"basic": "0.5", "standard": 1, "complex": 1},
        tiers=[{"name": "Only", "up_to": 10, "fee": "1000"}],
        overage_rate="3",
    )
    rating = rate(agreement, [usage("hr", "basic", 21)])
    assert wire(rating.lines, "JPY") == [
        {"kind": "tier_fee", "description": "Only tier (volume)", "quantity": "1",
         "unit_price": "1000", "amount": "1000"},
        {"kind": "overage", "description": "Overage above 10 weighted units",
         "quantity": "0.5", "unit_price": "3", "amount": "2"},
    ]  # fmt: skip
    assert rating.total == 1002
    assert wire(rating.lines, rating.currency) == wire(rating.lines, "JPY")


# --- late adjustments ---------------------------------------------------------------------------


def test_late_adjustment_line() -> None:
    line = late_adjustment_line("2026-09", Decimal("10180.00"), Decimal("10000.00"), "USD")
    assert wire((line,))[0] == {
        "kind": "late_adjustment",
        "description": "Late items adjustment for 2026-09",
        "period": "2026-09",
        "quantity": "1",
        "unit_price": "180.00",
        "amount": "180.00",
    }
    negative = late_adjustment_line("2026-09", Decimal("90000.00"), Decimal("90929.30"), "USD")
    assert wire((negative,))[0]["amount"] == "-929.30"
    assert wire((negative,))[0]["unit_price"] == "-929.30"
    zero = late_adjustment_line("2026-09", Decimal("10000.00"), Decimal("10000.00"), "USD")
    assert wire((zero,))[0]["amount"] == "0.00"


def test_late_adjustments_join_the_total() -> None:
    rating = rate(ACME, EXAMPLE_1)
    late = late_adjustment_line("2026-09", Decimal("10180.00"), Decimal("10000.00"), "USD")
    adjusted = rating.with_lines(late)
    assert [line.kind for line in adjusted.lines] == ["tier_fee", "late_adjustment"]
    assert f"{adjusted.total:f}" == "10180.00"
    assert json.dumps(wire(adjusted.lines, adjusted.currency))  # JSON-ready


# --- threshold alerts ---------------------------------------------------------------------------


def cs(items: int) -> list[ClassUsage]:
    return [usage("customer_support", "basic", items)]


def test_alerts_at_80_and_100_percent_of_the_tier() -> None:
    assert threshold_alerts(ACME.pricing, cs(700), cs(799)) == ()
    assert threshold_alerts(ACME.pricing, cs(700), cs(800)) == (ThresholdAlert("80", "Essential"),)
    assert threshold_alerts(ACME.pricing, cs(800), cs(900)) == ()
    assert threshold_alerts(ACME.pricing, cs(900), cs(1000)) == (
        ThresholdAlert("100", "Essential"),
    )
    assert threshold_alerts(ACME.pricing, cs(1000), cs(1001)) == ()


def test_a_jump_reports_every_threshold_passed() -> None:
    assert threshold_alerts(ACME.pricing, cs(700), cs(1200)) == (
        ThresholdAlert("80", "Essential"),
        ThresholdAlert("100", "Essential"),
    )
    assert threshold_alerts(ACME.pricing, cs(14000), cs(15500)) == (
        ThresholdAlert("100", "Enterprise"),
    )


def test_alert_when_scope_alone_moves_the_tier() -> None:
    before = EXAMPLE_1
    after = [*EXAMPLE_1, usage("accounting", "complex", 12)]
    assert threshold_alerts(ACME.pricing, before, after) == (ThresholdAlert("scope", "Enterprise"),)
    assert threshold_alerts(SURCHARGE.pricing, before, after) == ()
    assert threshold_alerts(ACME.pricing, after, after) == ()


# --- properties ---------------------------------------------------------------------------------

CURRENCIES = ["USD", "JPY", "KWD", "CLF"]


def decimal_text(draw: st.DrawFn, places: int, max_value: int = 10**7) -> str:
    scaled = draw(st.integers(0, max_value * 10**places))
    return f"{Decimal(scaled).scaleb(-places):f}"


@st.composite
def agreements(draw: st.DrawFn) -> Agreement:
    currency = draw(st.sampled_from(CURRENCIES))
    money = minor_units(currency)
    bounds = sorted(draw(st.sets(st.integers(1, 10**6), min_size=1, max_size=4)))
    unbounded_last = draw(st.booleans())
    tiers = []
    for index, bound in enumerate(bounds):
        scope: Any = "all"
        if draw(st.booleans()):
            lines = draw(st.lists(st.sampled_from(SERVICE_LINES), unique=True))
            scope = {
                line: draw(st.one_of(st.just("all"), st.lists(st.sampled_from(COMPLEXITIES))))
                for line in lines
            }
        last = index == len(bounds) - 1
        tiers.append(
            {"name": f"T{index}", "up_to": None if last and unbounded_last else bound,
             "fee": decimal_text(draw, draw(st.integers(0, money))), "scope": scope}
        )  # fmt: skip
    weights = {c: decimal_text(draw, draw(st.integers(0, 3)), 100) for c in COMPLEXITIES}
    return parse_agreement(
        {
            "client_id": "prop",
            "currency": currency,
            "pricing": {
                "weights": weights,
                "unit_basis": {
                    line: "units" for line in draw(st.sets(st.sampled_from(SERVICE_LINES)))
                },
                "tiers": tiers,
                "overage_rate": decimal_text(draw, money, 1000),
                "scope_policy": {
                    "mode": draw(st.sampled_from(["upgrade", "surcharge"])),
                    "min_items": draw(st.integers(1, 50)),
                    "out_of_scope_rate": decimal_text(draw, money, 1000),
                },
            },
        }
    )


service_classes = st.builds(
    ServiceClass, st.sampled_from(SERVICE_LINES), st.sampled_from(COMPLEXITIES)
)


@st.composite
def class_usage(draw: st.DrawFn) -> ClassUsage:
    items = draw(st.integers(0, 20_000))
    units = items + draw(st.integers(0, 5_000)) if items else 0
    return ClassUsage(draw(service_classes), items, units)


usages = st.lists(class_usage(), max_size=8)


@settings(max_examples=300, deadline=None)
@given(agreement=agreements(), rows=usages)
def test_total_is_the_sum_of_line_amounts_with_exact_minor_digits(
    agreement: Agreement, rows: list[ClassUsage]
) -> None:
    rating = rate(agreement, rows)
    assert rating.total == sum((line.amount for line in rating.lines), Decimal(0))
    digits = minor_units(agreement.currency)
    for value in [rating.total, *(line.amount for line in rating.lines),
                  *(line.unit_price for line in rating.lines)]:  # fmt: skip
        assert value.as_tuple().exponent == -digits
    for line in wire(rating.lines, rating.currency):
        for key in ("unit_price", "amount"):
            text = line[key].lstrip("-")
            assert "E" not in text
            assert len(text.partition(".")[2]) == digits
        assert "E" not in line["quantity"]
    assert rating.lines[0].kind == "tier_fee"


@settings(max_examples=300, deadline=None)
@given(agreement=agreements(), rows=usages, extra=service_classes, units=st.integers(1, 1000))
def test_one_more_item_never_lowers_w(
    agreement: Agreement, rows: list[ClassUsage], extra: ServiceClass, units: int
) -> None:
    before = decide_tier(agreement.pricing, rows)
    after = decide_tier(agreement.pricing, [*rows, ClassUsage(extra, 1, units)])
    assert after.weighted_units >= before.weighted_units
    assert after.volume_index >= before.volume_index


@settings(max_examples=300, deadline=None)
@given(agreement=agreements(), rows=usages)
def test_the_tier_is_never_below_the_volume_tier(
    agreement: Agreement, rows: list[ClassUsage]
) -> None:
    decision = decide_tier(agreement.pricing, rows)
    if agreement.pricing.scope_policy.mode == "upgrade":
        assert decision.tier_index == max(decision.volume_index, decision.scope_index)
        assert (decision.reason == "scope") == (decision.scope_index > decision.volume_index)
    else:
        assert decision.tier_index == decision.volume_index
        assert decision.reason == "volume"
    assert decision.tier_index >= decision.volume_index
    assert all(not decision.tier.covers(c.service_class) for c in decision.out_of_scope)
    assert list(decision.out_of_scope) == sorted(
        decision.out_of_scope, key=lambda c: c.service_class
    )
