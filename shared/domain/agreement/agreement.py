"""The per-client agreement of SPEC §3: validated, immutable, and back to the wire.

Pure (no I/O). Parse a client's body with `parse_agreement(dict)` or a YAML file with
`load_agreement_yaml(text)`; both raise a pydantic `ValidationError` whose `loc` names the
offending field, e.g. `("pricing", "tiers", 1, "up_to")`. `read_agreement_yaml(text)` gives a
YAML file's data unvalidated (decimals exact), for a caller that edits it first.

Numbers: weights and `up_to` are JSON numbers (`int` or `Decimal`, as `json.loads(...,
parse_float=Decimal)` gives them) or decimal strings; a Python `float` is taken by its shortest
repr. Fees and rates are decimal strings only, with at most the currency's minor digits.

Bounds (SPEC §3, §13): every decimal at most 10^12 with at most 6 decimal places; every string
valid Unicode without U+0000 or lone surrogates; at most 500 rules; `regex` patterns at most
1,000 characters, compiled with RE2 (linear time whatever the input). `parse_agreement_body`
reads a raw HTTP body (JSON or YAML) with nesting and size bounds, so no body can recurse the
parser to death; `wire_size` says how many bytes the agreement takes on the `agreements` topic.

`version` is assigned by the agreement store, never by the client: `parse_agreement` drops a
`version` found in the body (so a GET response can be PUT back unchanged), while
`Agreement.model_validate` keeps it (for reading stored or published agreements).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Annotated, Any, Final

import orjson
import yaml
from pydantic import (
    Field,
    StrictInt,
    StrictStr,
    model_serializer,
    model_validator,
)

from shared.domain.agreement.classification import Classification
from shared.domain.agreement.fields import (
    MAX_BODY_BYTES,
    MAX_NESTING,
    MAX_WIRE_BYTES,
    AgreementPart,
    ClientId,
    CurrencyCode,
    DateValue,
    Loc,
    TimezoneName,
    invalid,
    shown,
)
from shared.domain.agreement.pricing import Pricing
from shared.domain.agreement.terms import Commitment, ServiceLevels
from shared.domain.money import minor_units
from shared.domain.periods import Period

# --- the agreement ------------------------------------------------------------------------------


class Agreement(AgreementPart):
    client_id: ClientId
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    currency: CurrencyCode
    timezone: TimezoneName = "UTC"
    #: First day billed under this agreement, in its timezone; None: always in force.
    effective_from: DateValue | None = None
    classification: Classification = Classification()
    pricing: Pricing
    #: SPEC §11: service credits and the annual commitment (None: the agreement has no such term).
    service_levels: ServiceLevels | None = None
    commitment: Commitment | None = None
    #: Assigned by the store (1, 2, ...); see the module docstring.
    version: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _strings_and_nesting(cls, data: Any) -> Any:
        errors = _text_problems(data)
        if errors:
            raise invalid("Agreement", errors)
        return data

    @model_validator(mode="after")
    def _amounts_fit_currency(self) -> Agreement:
        digits = minor_units(self.currency)
        amounts: list[tuple[Loc, Decimal]] = [
            (("pricing", "tiers", index, "fee"), tier.fee)
            for index, tier in enumerate(self.pricing.tiers)
        ]
        if self.pricing.overage_rate is not None:
            amounts.append((("pricing", "overage_rate"), self.pricing.overage_rate))
        policy_rate = self.pricing.scope_policy.out_of_scope_rate
        amounts.append((("pricing", "scope_policy", "out_of_scope_rate"), policy_rate))
        if self.commitment is not None:
            amounts.append((("commitment", "annual_minimum"), self.commitment.annual_minimum))
        errors: list[tuple[Loc, str, Any]] = []
        for loc, amount in amounts:
            places = _decimal_places(amount)
            if places > digits:
                message = f"has {places} decimal places; {self.currency} allows at most {digits}"
                errors.append((loc, message, f"{amount:f}"))
        if self.commitment is not None and self.effective_from is None:
            message = "needs effective_from: the first contract year starts in its period"
            errors.append((("commitment",), message, None))
        if errors:
            raise invalid("Agreement", errors)
        return self

    def in_force_for(self, period: Period) -> bool:
        """Whether `period` is billed under this agreement: it ends after `effective_from`
        begins. Both are local midnights in the agreement's zone, so comparing dates suffices."""
        return self.effective_from is None or period.next().first_day > self.effective_from

    @model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        # model_dump() / model_dump_json() give the wire form too (e.g. as a FastAPI response).
        return self.to_wire()

    def with_version(self, version: int) -> Agreement:
        return self.model_copy(update={"version": version})

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready: decimals as strings (weights and up_to plain, money with the currency's
        minor digits), dates ISO 8601."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "currency": self.currency,
            "timezone": self.timezone,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "classification": self.classification.to_wire(),
            "pricing": self.pricing.to_wire(self.currency),
            **(
                {}
                if self.service_levels is None
                else {"service_levels": self.service_levels.to_wire()}
            ),
            **(
                {}
                if self.commitment is None
                else {"commitment": self.commitment.to_wire(self.currency)}
            ),
            "version": self.version,
        }


def _text_problems(data: Any) -> list[tuple[Loc, str, Any]]:
    """SPEC §13 for a raw body: every string (mapping keys too) valid Unicode without U+0000
    or lone surrogates, and lists and mappings nested at most MAX_NESTING deep. Iterative, so
    any depth is safe to walk."""
    errors: list[tuple[Loc, str, Any]] = []
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack and len(errors) < 20:
        loc, value = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                errors.append((loc, problem, shown(value)))
        elif isinstance(value, Mapping | list | tuple):
            if len(loc) >= MAX_NESTING:
                errors.append((loc, f"nested deeper than {MAX_NESTING} levels", "..."))
                continue
            if isinstance(value, Mapping):
                for key, item in value.items():
                    problem = _text_problem(key) if isinstance(key, str) else None
                    if problem:
                        errors.append(((*loc, key), f"field name {problem}", shown(key)))
                    stack.append(((*loc, key if isinstance(key, str | int) else str(key)), item))
            else:
                stack.extend(((*loc, index), item) for index, item in enumerate(value))
    return errors


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain U+0000 (NUL)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode: it holds a lone surrogate"
    return None


def _decimal_places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def parse_agreement(data: Any) -> Agreement:
    """A client's agreement body (a dict from JSON or YAML), validated. A `version` in the body
    is ignored: the store assigns it."""
    if isinstance(data, Mapping) and "version" in data:
        data = {key: value for key, value in data.items() if key != "version"}
    return Agreement.model_validate(data)


class AgreementTooLarge(ValueError):
    """A body over MAX_BODY_BYTES, or an agreement whose wire form is over MAX_WIRE_BYTES (413)."""


class _DecimalLoader(yaml.SafeLoader):
    """Safe YAML whose floats are Decimals, so `weights: {standard: 1.1}` stays exact.

    Bounded: nesting deeper than MAX_NESTING and aliases (`*name`, whose expansion can be
    exponential) are refused while composing, before any recursion can run away."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        refusal = None
        if self.check_event(yaml.AliasEvent):
            refusal = "YAML aliases (*name) are not accepted in an agreement"
        elif self._depth >= MAX_NESTING:
            refusal = f"nested deeper than {MAX_NESTING} levels"
        if refusal is not None:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, refusal, mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:  # .inf, .nan, 1:30 (sexagesimal): let validation refuse them
        return loader.construct_yaml_float(node)


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _yaml_decimal)


def read_agreement_yaml(text: str) -> Mapping[str, Any]:
    """A YAML document of the §3 shape as data, not yet validated: floats as exact Decimals,
    dates as `date`. ValueError if it is not YAML (aliases and deep nesting refused) or not a
    mapping."""
    try:
        data = yaml.load(text, Loader=_DecimalLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    except RecursionError:  # a backstop: compose_node bounds the depth first
        raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(data, Mapping):
        raise ValueError("an agreement YAML document must be a mapping")
    return data


def load_agreement_yaml(text: str) -> Agreement:
    """An agreement from a YAML document of the §3 shape. ValueError if it is not YAML or not a
    mapping; a pydantic ValidationError (a ValueError too) if it is not a valid agreement."""
    return parse_agreement(read_agreement_yaml(text))


YAML_MEDIA_TYPES: Final = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})

_JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS: Final = re.compile(r"[^\[\]{}]+")
_BRACKET_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_nesting(text: str) -> int:
    """How deep lists and objects nest in a JSON text (an estimate for malformed text), found
    without recursion: strings are skipped, every `[`/`{` is +1 and `]`/`}` -1."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    steps = array("b", brackets.translate(_BRACKET_STEPS))
    return max(accumulate(steps), default=0)


def body_text(raw: bytes) -> str:
    """An HTTP body as text; ValueError naming the byte where it is not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"the body is not valid UTF-8: byte {error.start} ({error.reason})"
        ) from None


def load_json(text: str) -> Any:
    """A JSON body, numbers kept exact (Decimal), nested at most MAX_NESTING levels (checked
    without recursion first); ValueError saying where it broke (line and column)."""
    if json_nesting(text) > MAX_NESTING:
        raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text, parse_float=Decimal)  # exact decimals
    except json.JSONDecodeError as error:
        raise ValueError(
            f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:  # a backstop: json_nesting bounds the depth first
        raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels") from None


def parse_agreement_body(raw: bytes, media_type: str = "application/json") -> Agreement:
    """An agreement from an HTTP body: JSON (numbers kept exact) or, for a YAML media type, YAML.

    AgreementTooLarge over MAX_BODY_BYTES or when its wire form would not fit a Kafka record;
    another ValueError (a pydantic ValidationError for an invalid agreement) saying what is wrong
    otherwise: invalid UTF-8 (with its byte offset), invalid JSON or YAML, nesting deeper than
    MAX_NESTING."""
    if len(raw) > MAX_BODY_BYTES:
        raise AgreementTooLarge(f"the body is {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    text = body_text(raw)
    if media_type in YAML_MEDIA_TYPES:
        agreement = load_agreement_yaml(text)
    else:
        agreement = parse_agreement(load_json(text))
    size = wire_size(agreement)
    if size > MAX_WIRE_BYTES:
        raise AgreementTooLarge(
            f"this agreement takes {size} bytes on the agreements topic; a Kafka record holds "
            f"at most {MAX_WIRE_BYTES}"
        )
    return agreement


def wire_bytes(agreement: Agreement) -> bytes:
    """The agreement as billing publishes it on the `agreements` topic."""
    return orjson.dumps(agreement.to_wire())


def wire_size(agreement: Agreement) -> int:
    """Bytes on the `agreements` topic once stored (with the largest version number)."""
    return len(wire_bytes(agreement.with_version(2**63 - 1)))
