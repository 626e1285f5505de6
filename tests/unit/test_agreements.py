import copy
import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.agreement.agreement import Agreement, load_agreement_yaml, parse_agreement
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES, ServiceClass
from shared.domain.periods import Period
from tests.spec_example import SPEC_TERMS_YAML, SPEC_YAML


def body(**changes: Any) -> dict[str, Any]:
    """A valid agreement as the HTTP layer hands it over (JSON numbers already Decimal)."""
    data: dict[str, Any] = json.loads(
        """{
        "client_id": "acme", "currency": "USD", "timezone": "America/New_York",
        "pricing": {
          "weights": {"basic": 1, "standard": 2, "complex": 5},
          "tiers": [
            {"name": "Essential", "up_to": 1000, "fee": "10000.00",
             "scope": {"customer_support": ["basic", "standard"]}},
            {"name": "Enterprise", "up_to": 15000, "fee": "90000.00", "scope": "all"}],
          "overage_rate": "7.50"}}""",
        parse_float=Decimal,
    )
    data.update(changes)
    return data


def with_pricing(**changes: Any) -> dict[str, Any]:
    data = body()
    data["pricing"].update(changes)
    return data


def with_tier(index: int, **changes: Any) -> dict[str, Any]:
    data = body()
    data["pricing"]["tiers"][index].update(changes)
    return data


def with_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return body(classification={"rules": [rule]})


def errors_of(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        parse_agreement(data)
    return [(tuple(error["loc"]), error["msg"]) for error in caught.value.errors()]


def assert_rejected_at(data: Any, loc: tuple[str | int, ...], *words: str) -> None:
    errors = errors_of(data)
    matching = [msg for error_loc, msg in errors if error_loc == loc]
    assert matching, f"no error at {loc}: {errors}"
    for word in words:
        assert any(word in msg for msg in matching), f"{word!r} not in {matching}"


# --- the spec example ---------------------------------------------------------------------------


def test_spec_example_yaml_parses() -> None:
    agreement = load_agreement_yaml(SPEC_YAML)
    assert agreement.client_id == "acme"
    assert agreement.name == "ACME Corp"
    assert agreement.currency == "USD"
    assert agreement.timezone == "America/New_York"
    assert agreement.effective_from == date(2026, 1, 1)
    rules = agreement.classification.rules
    assert [rule.id for rule in rules] == ["ap-invoices-large", "password-reset"]
    assert rules[0].when["units"].gte == Decimal(20)
    assert rules[1].when["title"].pattern is not None
    assert agreement.classification.default is not None
    assert agreement.classification.default.service_class == ServiceClass(
        "customer_support", "standard"
    )
    pricing = agreement.pricing
    assert pricing.weights.of("complex") == Decimal(5)
    assert pricing.counts_units("data_entry")
    assert not pricing.counts_units("hr")
    assert [t.name for t in pricing.tiers] == ["Essential", "Professional", "Enterprise"]
    assert [t.up_to for t in pricing.tiers] == [Decimal(1000), Decimal(5000), Decimal(15000)]
    assert pricing.tiers[2].fee == Decimal("90000.00")
    assert pricing.overage_rate == Decimal("7.50")
    policy = pricing.scope_policy
    assert (policy.mode, policy.min_items, policy.out_of_scope_rate) == (
        "upgrade",
        10,
        Decimal("12.00"),
    )
    assert agreement.version is None


def test_spec_section_11_example_loads() -> None:
    # SPEC §11's sections, verbatim, on §3's example agreement (whose effective_from the
    # commitment's contract years need).
    agreement = load_agreement_yaml(SPEC_YAML + SPEC_TERMS_YAML)
    terms = agreement.service_levels
    assert terms is not None and terms.calendar is not None
    assert terms.at_risk_percent == Decimal(10)
    assert terms.calendar.days == ("mon", "tue", "wed", "thu", "fri")
    assert terms.calendar.hours == ("09:00", "18:00")
    assert terms.calendar.holidays == (date(2026, 12, 25),)
    ap, care = terms.levels
    assert (ap.id, ap.service_line, ap.complexity, ap.within_hours, ap.clock) == (
        "ap-turnaround",
        "accounting",
        ("basic", "standard"),
        Decimal(24),
        "business",
    )
    assert (ap.target_percent, ap.pool_percent) == (Decimal(95), Decimal(60))
    assert (care.id, care.service_line, care.complexity, care.within_hours, care.clock) == (
        "care-turnaround",
        "customer_support",
        None,
        Decimal(4),
        "elapsed",
    )
    assert (care.target_percent, care.pool_percent) == (Decimal(90), Decimal(40))
    assert ap.selects(ServiceClass("accounting", "standard"))
    assert not ap.selects(ServiceClass("accounting", "complex"))
    assert care.selects(ServiceClass("customer_support", "complex"))
    business = terms.calendar.in_zone(agreement.timezone)
    assert (business.days, business.timezone) == (frozenset(range(5)), "America/New_York")
    assert agreement.commitment is not None
    assert agreement.commitment.annual_minimum == Decimal("400000.00")
    assert agreement.to_wire()["commitment"] == {"annual_minimum": "400000.00"}
    assert parse_agreement(json.loads(json.dumps(agreement.to_wire()))) == agreement


def test_to_wire_is_json_ready_and_round_trips() -> None:
    agreement = load_agreement_yaml(SPEC_YAML)
    wire = agreement.to_wire()
    text = json.dumps(wire)  # no Decimal, date or float in money
    assert wire["pricing"]["weights"] == {"basic": "1", "standard": "2", "complex": "5"}
    assert wire["pricing"]["tiers"][0]["up_to"] == "1000"
    assert wire["pricing"]["tiers"][0]["fee"] == "10000.00"
    assert wire["pricing"]["tiers"][2]["scope"] == "all"
    assert wire["pricing"]["overage_rate"] == "7.50"
    assert wire["pricing"]["scope_policy"]["out_of_scope_rate"] == "12.00"
    assert wire["effective_from"] == "2026-01-01"
    assert wire["classification"]["rules"][0]["when"] == {
        "queue": "AP Invoices",
        "units": {"gte": 20},
    }
    assert wire["classification"]["rules"][1]["when"] == {"title": {"regex": "(?i)password reset"}}
    assert parse_agreement(json.loads(text, parse_float=Decimal)) == agreement


def test_pydantic_dump_is_the_wire_form() -> None:
    agreement = load_agreement_yaml(SPEC_YAML).with_version(2)
    assert agreement.model_dump() == agreement.to_wire()
    assert json.loads(agreement.model_dump_json()) == agreement.to_wire()  # and no warnings
    assert json.loads(agreement.pricing.model_dump_json())["tiers"][0]["fee"] == "10000.00"


def test_defaults() -> None:
    agreement = parse_agreement(
        {
            "client_id": "c1",
            "currency": "EUR",
            "pricing": {
                "weights": {"basic": 1, "standard": 1, "complex": 1},
                "tiers": [{"name": "Flat", "up_to": None, "fee": "100.00"}],
            },
        }
    )
    assert agreement.timezone == "UTC"
    assert agreement.effective_from is None
    assert agreement.name is None
    assert agreement.classification.rules == ()
    assert agreement.classification.default is None
    assert agreement.pricing.unit_basis == {}
    assert agreement.pricing.overage_rate is None
    assert agreement.pricing.tiers[0].scope == "all"
    policy = agreement.pricing.scope_policy
    assert (policy.mode, policy.min_items, policy.out_of_scope_rate) == ("upgrade", 1, Decimal(0))
    assert agreement.pricing.to_wire("EUR")["scope_policy"]["out_of_scope_rate"] == "0.00"


def test_scope_policy_fields_default_individually() -> None:
    agreement = parse_agreement(with_pricing(scope_policy={"mode": "surcharge"}))
    policy = agreement.pricing.scope_policy
    assert (policy.mode, policy.min_items) == ("surcharge", 1)
    assert policy.out_of_scope_rate == 0


def test_decimals_from_numbers_and_strings() -> None:
    data = with_pricing(weights={"basic": "0.5", "standard": Decimal("1.25"), "complex": 3})
    data["pricing"]["tiers"][0]["up_to"] = "1000.5"
    agreement = parse_agreement(data)
    assert agreement.pricing.weights.of("basic") == Decimal("0.5")
    assert agreement.pricing.weights.of("standard") == Decimal("1.25")
    assert agreement.pricing.tiers[0].up_to == Decimal("1000.5")
    assert agreement.to_wire()["pricing"]["weights"]["standard"] == "1.25"


def test_yaml_decimals_stay_exact() -> None:
    text = SPEC_YAML.replace("weights: {basic: 1,", "weights: {basic: 1.10,")
    assert load_agreement_yaml(text).pricing.weights.of("basic") == Decimal("1.10")


def test_jpy_fee_without_minor_digits() -> None:
    data = body(currency="JPY")
    for tier in data["pricing"]["tiers"]:
        tier["fee"] = "1000000"
    data["pricing"]["overage_rate"] = "750"
    agreement = parse_agreement(data)
    assert agreement.to_wire()["pricing"]["tiers"][0]["fee"] == "1000000"


def test_version_is_set_by_the_store_not_the_client() -> None:
    assert parse_agreement(body(version=7)).version is None
    stored = parse_agreement(body()).with_version(3)
    assert stored.version == 3
    assert Agreement.model_validate(stored.to_wire()).version == 3


def test_agreement_is_frozen() -> None:
    agreement = parse_agreement(body())
    with pytest.raises(ValidationError):
        agreement.currency = "EUR"  # type: ignore[misc]


# --- rejections, each at the field's loc --------------------------------------------------------


def test_unknown_currency() -> None:
    assert_rejected_at(body(currency="XYZ"), ("currency",), "unknown currency")
    assert_rejected_at(body(currency="usd"), ("currency",), "upper case")
    assert_rejected_at(body(currency="XAU"), ("currency",))


def test_bad_timezone() -> None:
    assert_rejected_at(body(timezone="Mars/Base"), ("timezone",), "timezone")
    assert_rejected_at(body(timezone=5), ("timezone",))


@pytest.mark.parametrize("client_id", ["", "Acme", "-acme", "acme corp", "a" * 65, 12])
def test_bad_client_id(client_id: Any) -> None:
    assert_rejected_at(body(client_id=client_id), ("client_id",))


def test_non_ascending_tiers() -> None:
    assert_rejected_at(with_tier(1, up_to=1000), ("pricing", "tiers", 1, "up_to"), "ascending")
    assert_rejected_at(with_tier(1, up_to=999), ("pricing", "tiers", 1, "up_to"), "ascending")


def test_null_up_to_only_on_the_last_tier() -> None:
    assert_rejected_at(with_tier(0, up_to=None), ("pricing", "tiers", 0, "up_to"), "last tier")


def test_unbounded_last_tier_needs_no_overage_rate() -> None:
    data = with_tier(1, up_to=None)
    del data["pricing"]["overage_rate"]
    assert parse_agreement(data).pricing.tiers[-1].up_to is None


@pytest.mark.parametrize("up_to", [0, -5, "0", "abc", True, "1e3", "", [1]])
def test_bad_up_to(up_to: Any) -> None:
    assert_rejected_at(with_tier(0, up_to=up_to), ("pricing", "tiers", 0, "up_to"))


def test_missing_weight() -> None:
    data = with_pricing(weights={"basic": 1, "standard": 2})
    assert_rejected_at(data, ("pricing", "weights", "complex"), "required")


@pytest.mark.parametrize("weight", [True, "abc", "-1", -1, "", None, "NaN", Decimal("NaN")])
def test_bad_weight(weight: Any) -> None:
    data = with_pricing(weights={"basic": weight, "standard": 2, "complex": 5})
    assert_rejected_at(data, ("pricing", "weights", "basic"))


def test_zero_weight_is_allowed() -> None:
    data = with_pricing(weights={"basic": 0, "standard": 2, "complex": 5})
    assert parse_agreement(data).pricing.weights.of("basic") == 0


def test_fee_as_number() -> None:
    assert_rejected_at(with_tier(0, fee=10000), ("pricing", "tiers", 0, "fee"), "decimal string")
    assert_rejected_at(
        with_tier(0, fee=Decimal("10000.00")), ("pricing", "tiers", 0, "fee"), "decimal string"
    )


@pytest.mark.parametrize("fee", ["-1.00", "abc", "", "1,000.00", "1e3", " 10.00"])
def test_bad_fee_text(fee: str) -> None:
    assert_rejected_at(with_tier(0, fee=fee), ("pricing", "tiers", 0, "fee"))


def test_fee_with_too_many_digits() -> None:
    data = body(currency="JPY")
    data["pricing"]["tiers"][0]["fee"] = "1.5"
    data["pricing"]["tiers"][1]["fee"] = "90000"
    data["pricing"]["overage_rate"] = "8"
    assert_rejected_at(data, ("pricing", "tiers", 0, "fee"), "JPY allows at most 0")
    assert_rejected_at(with_tier(1, fee="1.005"), ("pricing", "tiers", 1, "fee"), "USD")
    assert_rejected_at(with_pricing(overage_rate="7.505"), ("pricing", "overage_rate"))
    policy = {"out_of_scope_rate": "0.125"}
    assert_rejected_at(
        with_pricing(scope_policy=policy), ("pricing", "scope_policy", "out_of_scope_rate")
    )


def test_kwd_allows_three_digits() -> None:
    data = body(currency="KWD")
    data["pricing"]["tiers"][0]["fee"] = "10.125"
    data["pricing"]["tiers"][1]["fee"] = "20.500"
    data["pricing"]["overage_rate"] = "0.005"
    assert parse_agreement(data).to_wire()["pricing"]["tiers"][1]["fee"] == "20.500"


def test_missing_overage_rate_with_bounded_last_tier() -> None:
    data = body()
    del data["pricing"]["overage_rate"]
    assert_rejected_at(data, ("pricing", "overage_rate"), "required")
    assert_rejected_at(with_pricing(overage_rate=None), ("pricing", "overage_rate"))
    assert_rejected_at(with_pricing(overage_rate=7.5), ("pricing", "overage_rate"))


def test_tier_shape() -> None:
    assert_rejected_at(with_pricing(tiers=[]), ("pricing", "tiers"), "at least one")
    assert_rejected_at(with_tier(1, name="Essential"), ("pricing", "tiers", 1, "name"), "duplicate")
    assert_rejected_at(with_tier(0, name="  "), ("pricing", "tiers", 0, "name"))
    assert_rejected_at(with_tier(0, name=""), ("pricing", "tiers", 0, "name"))
    assert_rejected_at(with_tier(0, scope="some"), ("pricing", "tiers", 0, "scope"))
    assert_rejected_at(
        with_tier(0, scope={"legal": "all"}), ("pricing", "tiers", 0, "scope", "legal")
    )
    assert_rejected_at(with_tier(0, scope={"hr": ["hard"]}), ("pricing", "tiers", 0, "scope", "hr"))
    assert_rejected_at(with_tier(0, colour="red"), ("pricing", "tiers", 0, "colour"))


def test_scope_policy_shape() -> None:
    for policy, field in [
        ({"mode": "downgrade"}, "mode"),
        ({"min_items": 0}, "min_items"),
        ({"min_items": "10"}, "min_items"),
        ({"min_items": True}, "min_items"),
        ({"out_of_scope_rate": 12}, "out_of_scope_rate"),
    ]:
        assert_rejected_at(with_pricing(scope_policy=policy), ("pricing", "scope_policy", field))


def test_unit_basis_shape() -> None:
    assert_rejected_at(
        with_pricing(unit_basis={"data_entry": "lines"}), ("pricing", "unit_basis", "data_entry")
    )


def test_unknown_field() -> None:
    assert_rejected_at(body(discount="10%"), ("discount",))
    assert_rejected_at(with_pricing(discount="10%"), ("pricing", "discount"))


def test_bad_effective_from() -> None:
    assert_rejected_at(body(effective_from="2026-13-01"), ("effective_from",))
    assert_rejected_at(body(effective_from=20260101), ("effective_from",))
    assert_rejected_at(body(effective_from="2026-01-01T00:00:00Z"), ("effective_from",))
    assert parse_agreement(body(effective_from="2026-02-01")).effective_from == date(2026, 2, 1)


def test_all_errors_are_reported_together() -> None:
    data = body(currency="XYZ", timezone="Nowhere")
    data["pricing"]["tiers"][0]["fee"] = 5
    locs = {loc for loc, _ in errors_of(data)}
    assert {("currency",), ("timezone",), ("pricing", "tiers", 0, "fee")} <= locs


def test_input_is_not_mutated() -> None:
    data = body(version=3)
    snapshot = copy.deepcopy(data)
    parse_agreement(data)
    assert data == snapshot


# --- rules and conditions -----------------------------------------------------------------------

THEN = {"service_line": "hr", "complexity": "basic"}


def rule(when: Any) -> dict[str, Any]:
    return with_rule({"id": "r1", "when": when, "then": THEN})


WHEN = ("classification", "rules", 0, "when")


@pytest.mark.parametrize(
    "when",
    [
        {},
        {"queue": "AP"},
        {"units": 5},
        {"units": Decimal("2.5")},
        {"attributes.vip": True},
        {"attributes.region.code": "emea"},
        {"tags": "urgent"},
        {"tags": {"contains": "urgent"}},
        {"title": {"in": ["a", "B", 3, False]}},
        {"title": {"regex": "(?i)^reset"}},
        {"handling_seconds": {"gte": 600, "lt": 3600}},
        {"source": {"regex": "zen", "in": ["zendesk"]}},
    ],
)
def test_valid_conditions(when: Any) -> None:
    agreement = parse_agreement(rule(when))
    assert set(agreement.classification.rules[0].when) == set(when)
    assert agreement.classification.rules[0].to_wire()["when"] == when


def test_operator_on_tags() -> None:
    for when in [
        {"tags": {"regex": "x"}},
        {"tags": {"in": ["x"]}},
        {"tags": {"gte": 1}},
        {"tags": {"contains": "x", "regex": "y"}},
        {"tags": 5},
        {"tags": True},
    ]:
        assert_rejected_at(rule(when), (*WHEN, "tags"), "tags")


def test_contains_only_on_tags() -> None:
    assert_rejected_at(rule({"title": {"contains": "x"}}), (*WHEN, "title"), "only to tags")


def test_bad_regex_is_named_at_the_pattern_with_the_rule_id() -> None:
    at_regex = (*WHEN, "title", "regex")
    assert_rejected_at(rule({"title": {"regex": "(unclosed"}}), at_regex, "regex", "'r1'")
    assert_rejected_at(rule({"title": {"regex": 5}}), at_regex, "regex")


def test_unknown_condition_field() -> None:
    assert_rejected_at(rule({"priority": "high"}), (*WHEN, "priority"), "unknown field")
    assert_rejected_at(rule({"attributes.": "x"}), (*WHEN, "attributes."), "unknown field")
    assert_rejected_at(rule({"attributes": {"vip": True}}), (*WHEN, "attributes"))


@pytest.mark.parametrize(
    ("when", "word"),
    [
        ({"queue": {}}, "empty"),
        ({"queue": {"like": "x"}}, "unknown operator"),
        ({"queue": None}, "must be"),
        ({"queue": ["a"]}, "must be"),
    ],
)
def test_bad_conditions(when: Any, word: str) -> None:
    field = next(iter(when))
    assert_rejected_at(rule(when), (*WHEN, field), word)


@pytest.mark.parametrize(
    ("when", "word"),
    [
        ({"queue": {"in": []}}, "in"),
        ({"queue": {"in": "abc"}}, "in"),
        ({"queue": {"in": [None]}}, "in"),
        ({"units": {"gte": "5"}}, "number"),
        ({"units": {"gte": True}}, "number"),
    ],
)
def test_bad_operands_are_named_at_their_operator(when: Any, word: str) -> None:
    field = next(iter(when))
    operator = next(iter(when[field]))
    assert_rejected_at(rule(when), (*WHEN, field, operator), word)


def test_rule_shape() -> None:
    rules = ("classification", "rules")
    assert_rejected_at(
        with_rule({"id": "r", "when": {}, "then": {"service_line": "hr"}}),
        (*rules, 0, "then", "complexity"),
    )
    assert_rejected_at(
        with_rule({"id": "r", "then": {"service_line": "legal", "complexity": "basic"}}),
        (*rules, 0, "then", "service_line"),
    )
    assert_rejected_at(with_rule({"when": {}, "then": THEN}), (*rules, 0, "id"))
    assert_rejected_at(with_rule({"id": "default", "then": THEN}), (*rules, 0, "id"), "reserved")
    assert_rejected_at(with_rule({"id": "builtin:hr", "then": THEN}), (*rules, 0, "id"))
    twice = body(classification={"rules": [{"id": "r", "then": THEN}, {"id": "r", "then": THEN}]})
    assert_rejected_at(twice, (*rules, 1, "id"), "duplicate")
    assert_rejected_at(
        body(classification={"default": {"service_line": "hr"}}),
        ("classification", "default", "complexity"),
    )


def test_rule_without_when_always_holds() -> None:
    agreement = parse_agreement(with_rule({"id": "all", "then": THEN}))
    assert agreement.classification.rules[0].when == {}


# --- helpers ------------------------------------------------------------------------------------


def test_service_class_order() -> None:
    classes = [ServiceClass(line, c) for line in reversed(SERVICE_LINES) for c in COMPLEXITIES]
    ordered = sorted(classes)
    assert ordered[0] == ServiceClass("data_entry", "basic")
    assert ordered[2] == ServiceClass("data_entry", "complex")
    assert ordered[3] == ServiceClass("accounting", "basic")
    assert ordered[-1] == ServiceClass("procurement", "complex")
    with pytest.raises(ValueError):
        ServiceClass("legal", "basic")  # type: ignore[arg-type]


def test_tier_covers() -> None:
    tiers = load_agreement_yaml(SPEC_YAML).pricing.tiers
    essential, professional, enterprise = tiers
    assert essential.covers(ServiceClass("data_entry", "standard"))
    assert not essential.covers(ServiceClass("data_entry", "complex"))
    assert not essential.covers(ServiceClass("accounting", "basic"))
    assert professional.covers(ServiceClass("it_support", "complex"))
    assert not professional.covers(ServiceClass("accounting", "complex"))
    assert all(
        enterprise.covers(ServiceClass(line, c)) for line in SERVICE_LINES for c in COMPLEXITIES
    )


def test_in_force_for() -> None:
    agreement = parse_agreement(body(effective_from="2026-03-15"))
    assert not agreement.in_force_for(Period(2026, 2))
    assert agreement.in_force_for(Period(2026, 3))  # ends after the 15th: billed
    assert agreement.in_force_for(Period(2027, 1))
    on_the_first = parse_agreement(body(effective_from="2026-03-01"))
    assert not on_the_first.in_force_for(Period(2026, 2))  # ends exactly when it starts
    assert on_the_first.in_force_for(Period(2026, 3))
    assert parse_agreement(body()).in_force_for(Period(1999, 1))


def test_yaml_that_is_not_an_agreement() -> None:
    with pytest.raises(ValueError, match="YAML"):
        load_agreement_yaml("a: [unclosed")
    with pytest.raises(ValueError, match="mapping"):
        load_agreement_yaml("- just\n- a list\n")
    with pytest.raises(ValidationError):
        load_agreement_yaml(SPEC_YAML.replace('fee: "10000.00"', "fee: 10000.00"))
