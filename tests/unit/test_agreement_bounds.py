"""SPEC §3/§13 bounds on agreements, with the hostile examples of issue 10: RE2 patterns,
bounded decimals and strings, nesting, body and wire sizes."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.agreement.agreement import (
    AgreementTooLarge,
    parse_agreement,
    parse_agreement_body,
    wire_bytes,
    wire_size,
)
from shared.domain.agreement.classification import RulePattern
from shared.domain.agreement.fields import (
    MAX_BODY_BYTES,
    MAX_NESTING,
    MAX_PATTERN_LENGTH,
    MAX_RULES,
    MAX_WIRE_BYTES,
)
from tests.spec_example import SPEC_YAML
from tests.unit.test_agreements import (
    THEN,
    WHEN,
    assert_rejected_at,
    body,
    rule,
    with_pricing,
    with_tier,
)


def json_body(data: Any) -> bytes:
    return json.dumps(data, default=str).encode()


# --- regex: RE2 ---------------------------------------------------------------------------------


def test_nested_quantifier_is_allowed_and_runs_in_linear_time() -> None:
    agreement = parse_agreement(rule({"title": {"regex": "(a+)+$"}}))
    pattern = agreement.classification.rules[0].when["title"].pattern
    assert pattern is not None
    started = time.perf_counter()
    assert not pattern.search("a" * 41 + "!")  # the issue's title: backtracking takes minutes
    assert not pattern.search("a" * 5_000 + "!")
    assert time.perf_counter() - started < 1.0
    assert pattern.search("aaa")


@pytest.mark.parametrize(
    "pattern",
    [r"(a)\1", r"(?<=a)b", r"(?=a)", r"(?!a)b", "(unclosed", "a{1001}", r"\p{NoSuchClass}"],
)
def test_a_pattern_re2_refuses_is_named_with_its_rule(pattern: str) -> None:
    assert_rejected_at(rule({"title": {"regex": pattern}}), (*WHEN, "title", "regex"), "r1", "RE2")


def test_refused_pattern_writes_nothing_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        RulePattern(r"(a)\1")
    assert capfd.readouterr().err == ""


def test_pattern_length_is_bounded_in_code_points() -> None:
    longest = "é" * MAX_PATTERN_LENGTH
    assert parse_agreement(rule({"title": {"regex": longest}}))
    assert_rejected_at(rule({"title": {"regex": longest + "é"}}), (*WHEN, "title", "regex"), "1000")


def test_re2_semantics_ignore_case_and_unicode() -> None:
    assert RulePattern("(?i)password reset").search("PASSWORD RESET please")
    assert not RulePattern("password reset").search("PASSWORD RESET")
    assert RulePattern("(?i)café").search("CAFÉ au lait")
    assert RulePattern("^é.$").search("éx")  # a character, not a byte
    assert RulePattern(r"\z").search("")
    assert not RulePattern(r"\d").search("\udc80")  # a lone surrogate never raises


def test_pattern_round_trips_on_the_wire() -> None:
    agreement = parse_agreement(rule({"title": {"regex": "(?i)^reset|vpn"}}))
    assert agreement.to_wire()["classification"]["rules"][0]["when"] == {
        "title": {"regex": "(?i)^reset|vpn"}
    }
    again = parse_agreement(json.loads(wire_bytes(agreement.with_version(1))))
    assert again.classification == agreement.classification


def test_at_most_500_rules() -> None:
    rules = [{"id": f"r{i}", "when": {"queue": f"q{i}"}, "then": THEN} for i in range(MAX_RULES)]
    assert len(parse_agreement(body(classification={"rules": rules})).classification.rules) == 500
    rules.append({"id": "one-more", "then": THEN})
    assert_rejected_at(body(classification={"rules": rules}), ("classification", "rules"), "500")


# --- decimals -----------------------------------------------------------------------------------


def test_the_issue_13_byte_weight_is_refused_at_its_field() -> None:
    raw = json.dumps(body()).replace('"complex": 5', '"complex": 1e2000000').encode()
    assert b"1e2000000" in raw
    with pytest.raises(ValidationError) as caught:
        parse_agreement_body(raw)
    locs = [tuple(e["loc"]) for e in caught.value.errors()]
    assert locs == [("pricing", "weights", "complex")]
    assert "10^12" in caught.value.errors()[0]["msg"]
    assert len(str(caught.value)) < 2_000  # the message does not spell out two million digits


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (with_pricing(weights={"basic": 1, "standard": "1000000000000.1", "complex": 5}),
         ("pricing", "weights", "standard")),
        (with_pricing(weights={"basic": Decimal("0.0000001"), "standard": 2, "complex": 5}),
         ("pricing", "weights", "basic")),
        (with_tier(0, up_to=Decimal("1e13")), ("pricing", "tiers", 0, "up_to")),
        (with_tier(1, up_to="1" + "0" * 5000), ("pricing", "tiers", 1, "up_to")),
        (with_tier(0, fee="1" + "0" * 13 + ".00"), ("pricing", "tiers", 0, "fee")),
        (with_pricing(overage_rate="99999999999999"), ("pricing", "overage_rate")),
        (with_pricing(scope_policy={"out_of_scope_rate": "1" * 20}),
         ("pricing", "scope_policy", "out_of_scope_rate")),
        (with_pricing(scope_policy={"min_items": 10**13}),
         ("pricing", "scope_policy", "min_items")),
        (rule({"units": {"gte": Decimal("1e2000000")}}), (*WHEN, "units", "gte")),
        (rule({"units": Decimal("-1e300")}), (*WHEN, "units")),
        (rule({"attributes.n": {"in": [1, Decimal("1e-2000000")]}}), (*WHEN, "attributes.n", "in")),
    ],
)  # fmt: skip
def test_every_decimal_is_bounded(data: Any, loc: tuple[str | int, ...]) -> None:
    assert_rejected_at(data, loc)


def test_bounds_are_inclusive() -> None:
    agreement = parse_agreement(
        with_pricing(
            weights={"basic": Decimal("0.000001"), "standard": "1000000000000", "complex": 5},
            overage_rate="1000000000000.00",
        )
    )
    assert agreement.pricing.weights.standard == Decimal(10) ** 12
    assert parse_agreement(with_tier(0, up_to="2.5000000000"))  # trailing zeros are not places


# --- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (body(name="ACME\x00"), ("name",)),
        (body(name="\ud800"), ("name",)),
        (with_tier(0, name="Ess\x00ential"), ("pricing", "tiers", 0, "name")),
        (rule({"queue": "AP\x00"}), (*WHEN, "queue")),
        (rule({"title": {"in": ["ok", "\udfff"]}}), (*WHEN, "title", "in", 1)),
        (rule({"title": {"regex": "a\x00"}}), (*WHEN, "title", "regex")),
        (rule({"attributes.k\x00": "x"}), (*WHEN, "attributes.k\x00")),
        (body(classification={"rules": [{"id": "r\x00", "then": THEN}]}),
         ("classification", "rules", 0, "id")),
        (body(currency="US\x00"), ("currency",)),
    ],
)  # fmt: skip
def test_strings_without_nul_or_lone_surrogates(data: Any, loc: tuple[str | int, ...]) -> None:
    assert_rejected_at(data, loc)


def test_nul_escape_in_a_json_body_is_a_named_error() -> None:
    raw = json.dumps(body(name="a\u0000b")).encode()
    assert b"\\u0000" in raw
    with pytest.raises(ValidationError) as caught:
        parse_agreement_body(raw)
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [("name",)]


# --- bodies: encoding, nesting, size ------------------------------------------------------------


def test_invalid_utf8_names_the_byte() -> None:
    raw = json_body(body(name="ACME")).replace(b"ACME", b"AC\xffME")
    with pytest.raises(ValueError, match="UTF-8: byte") as caught:
        parse_agreement_body(raw)
    assert not isinstance(caught.value, ValidationError)


@pytest.mark.parametrize(
    ("raw", "media_type"),
    [
        (b"[" * 10_000, "application/json"),
        (b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "application/json"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
        (b"- " * 5_000 + b"x", "application/yaml"),
        (b"[" * 10_000, "application/yaml"),
        (b"{a: " * 3_000 + b"1" + b"}" * 3_000, "application/yaml"),
        ("".join(f"{' ' * i}k{i}:\n" for i in range(600)).encode() + b" " * 600 + b"x",
         "application/yaml"),
    ],
)  # fmt: skip
def test_deep_nesting_is_refused_before_any_recursion(raw: bytes, media_type: str) -> None:
    with pytest.raises(ValueError, match=f"deeper than {MAX_NESTING}"):
        parse_agreement_body(raw, media_type)


def test_yaml_aliases_are_refused() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(ValueError, match="aliases"):
        parse_agreement_body(laughs.encode(), "application/yaml")


def test_spec_yaml_and_json_bodies_parse() -> None:
    from_yaml = parse_agreement_body(SPEC_YAML.encode(), "application/yaml")
    assert from_yaml.client_id == "acme"
    from_json = parse_agreement_body(wire_bytes(from_yaml))
    assert from_json.to_wire() == from_yaml.to_wire()


def test_a_body_over_1_mib_is_too_large() -> None:
    raw = json_body(body(name="x")).replace(b'"x"', b'"' + b" " * MAX_BODY_BYTES + b'"')
    with pytest.raises(AgreementTooLarge):
        parse_agreement_body(raw)


def test_an_agreement_kafka_could_not_carry_is_too_large() -> None:
    # Under 1 MiB as sent, over 1,000,000 bytes as published: `1e12` goes out as 13 digits.
    def raw_with(rules: int) -> bytes:
        placeholder = [{"id": f"r{i}", "when": {"units": {"in": "X"}}, "then": THEN}
                       for i in range(rules)]  # fmt: skip
        numbers = "[" + ",".join(["1e12"] * 300) + "]"
        return json_body(body(classification={"rules": placeholder})).replace(
            b'"X"', numbers.encode()
        )

    raw = raw_with(400)
    assert len(raw) <= MAX_BODY_BYTES
    with pytest.raises(AgreementTooLarge, match="agreements topic"):
        parse_agreement_body(raw)
    fewer = parse_agreement_body(raw_with(200))
    assert wire_size(fewer) <= MAX_WIRE_BYTES
