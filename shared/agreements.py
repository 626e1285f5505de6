"""The per-client agreement of SPEC §3: validated, immutable, and back to the wire.

Pure (no I/O). Parse a client's body with `parse_agreement(dict)` or a YAML file with
`load_agreement_yaml(text)`; both raise a pydantic `ValidationError` whose `loc` names the
offending field, e.g. `("pricing", "tiers", 1, "up_to")`.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import total_ordering
from itertools import accumulate
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeGuard

import orjson
import re2  # type: ignore[import-untyped]
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.money import format_decimal, format_money, is_currency, minor_units
from shared.periods import Period, is_timezone

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
#: this one definition (`shared.events` builds on this module, never the other way round).
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


def _fail(message: str) -> PydanticCustomError:
    # The message travels as context so braces in it ("{contains: x}") are not a template.
    return PydanticCustomError("agreement", "{reason}", {"reason": message})


def _invalid(title: str, errors: Sequence[tuple[Loc, str, Any]]) -> ValidationError:
    """One ValidationError carrying several errors, each at its own `loc` below the caller."""
    return ValidationError.from_exception_data(
        title,
        [InitErrorDetails(type=_fail(msg), loc=loc, input=value) for loc, msg, value in errors],
    )


# --- scalar field types -------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal:
    """A JSON number or a decimal string, as an exact Decimal."""
    if isinstance(value, bool):
        raise _fail("must be a number, not a boolean")
    if isinstance(value, int):
        return _bounded(Decimal(value))
    if isinstance(value, float):
        value = Decimal(repr(value))  # the literal the float came from, not its binary noise
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail("must be a finite number")
        return _bounded(value)
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        return _bounded(Decimal(value))
    raise _fail(f'must be a number or a decimal string such as "2.5"; got {_shown(value)}')


def _bounded(number: Decimal) -> Decimal:
    """SPEC §13: at most 10^12 in magnitude, at most 6 decimal places (trailing zeros aside).
    Exact comparisons only: no context arithmetic, which overflows on `1e2000000`."""
    if number.copy_abs() > MAX_DECIMAL:
        raise _fail("must be at most 10^12 (1000000000000)")
    if _significant_places(number) > MAX_DECIMAL_PLACES:
        raise _fail(f"must have at most {MAX_DECIMAL_PLACES} decimal places")
    return number


def _significant_places(number: Decimal) -> int:
    """Decimal places without trailing zeros: 2.50 has 1, 1e-7 has 7, 1e5 has 0."""
    _sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int) or not any(digits):
        return 0
    trailing = len(digits) - len(bytes(digits).rstrip(b"\x00"))
    return max(0, -(exponent + trailing))


def _shown(value: Any, limit: int = 40) -> str:
    """`value` as an error message quotes it: short, whatever its size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _non_negative_decimal(value: Any) -> Decimal:
    number = _decimal(value)
    if number < 0:
        raise _fail("must not be negative")
    return number


def _positive_decimal(value: Any) -> Decimal:
    number = _decimal(value)
    if number <= 0:
        raise _fail("must be greater than 0")
    return number


def _money_text(value: Any) -> Decimal:
    """A fee or rate: a non-negative decimal string (never a JSON number, so no float ever
    rounds an amount). The currency's digit limit is checked on the whole agreement."""
    if isinstance(value, str):
        if _MONEY_TEXT.fullmatch(value):
            return _bounded(Decimal(value))
        if value.startswith("-") and _MONEY_TEXT.fullmatch(value[1:]):
            raise _fail("must not be negative")
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        raise _fail(f'must be a decimal string such as "10000.00", not the number {_shown(value)}')
    raise _fail(f'must be a decimal string such as "10000.00"; got {_shown(value)}')


def is_client_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a whole client id."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


def _client_id(value: Any) -> str:
    if not is_client_id(value):
        raise _fail(
            "must be 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return value


def _currency(value: Any) -> str:
    if is_currency(value):
        return str(value)
    if isinstance(value, str) and is_currency(value.upper()):
        raise _fail(f"ISO 4217 codes are upper case: {value.upper()!r}, not {value!r}")
    raise _fail(
        f"unknown currency {_shown(value)}: expected an ISO 4217 code such as USD, EUR or JPY"
    )


def _timezone(value: Any) -> str:
    if is_timezone(value):
        return str(value)
    raise _fail(f"unknown IANA timezone {_shown(value)}: expected e.g. America/New_York or UTC")


def _non_blank(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("must be a string")
    if not value.strip():
        raise _fail("must not be blank")
    if len(value) > 128:
        raise _fail("must be at most 128 characters")
    return value


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _fail(f"must be a date YYYY-MM-DD; got {_shown(value)}")


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


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- classification -----------------------------------------------------------------------------

Scalar: TypeAlias = str | Decimal | bool


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the client's 422, not a line on stderr
    options.never_capture = True  # only "does it match" is asked: the DFA answers alone
    return options


_RE2_OPTIONS: Final = _re2_options()
_UNANCHORED: Final = re2._re2.RE2.Anchor.UNANCHORED


class RegexError(ValueError):
    """A pattern RE2 cannot run (its syntax, a backreference or lookaround, or its size)."""


class RulePattern:
    """A `regex` condition: an unanchored RE2 search, linear in the text whatever the pattern.

    RE2 syntax and semantics (SPEC §3): `(?i)` ignores case, `\\w` and `\\b` are ASCII, there
    are no backreferences or lookaround. Compiled once, when the agreement is read.
    """

    __slots__ = ("_regexp", "pattern")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise RegexError(
                f"'regex' is {len(pattern)} characters; a pattern has at most {MAX_PATTERN_LENGTH}"
            )
        self.pattern = pattern
        self._regexp = re2._re2.RE2(_utf8(pattern), _RE2_OPTIONS)
        if not self._regexp.ok():
            reason = self._regexp.error()
            reason = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
            raise RegexError(f"'regex' is not a pattern RE2 can run: {reason}")

    def search(self, text: str) -> bool:
        """Whether the pattern occurs anywhere in `text`."""
        encoded = _utf8(text)
        span = self._regexp.Match(_UNANCHORED, encoded, 0, len(encoded))[0]
        return bool(span[0] >= 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RulePattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"RulePattern({self.pattern!r})"


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (never in a valid item) is bytes RE2 does not match,
    # rather than an exception in the classifier.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Condition:
    """One field's condition from a rule's `when`; every operator present must hold.

    `equals` is the bare form (`queue: "AP Invoices"`); on `tags` both the bare form and
    `contains` mean "some tag equals it, ignoring case". Numbers are kept as Decimal; `pattern`
    is compiled once, when the agreement is read.
    """

    field: str
    equals: Scalar | None = None
    one_of: tuple[Scalar, ...] | None = None
    pattern: RulePattern | None = None
    gte: Decimal | None = None
    gt: Decimal | None = None
    lte: Decimal | None = None
    lt: Decimal | None = None
    contains: str | None = None

    def to_wire(self) -> Any:
        if self.equals is not None:
            return _scalar_to_wire(self.equals)
        wire: dict[str, Any] = {}
        if self.one_of is not None:
            wire["in"] = [_scalar_to_wire(v) for v in self.one_of]
        if self.pattern is not None:
            wire["regex"] = self.pattern.pattern
        for name in COMPARISONS:
            bound = getattr(self, name)
            if bound is not None:
                wire[name] = _scalar_to_wire(bound)
        if self.contains is not None:
            wire["contains"] = self.contains
        return wire


def _scalar_to_wire(value: Scalar) -> Any:
    # A rule operand must stay a JSON number (a string would change its meaning); integral
    # values go out as int, others as float, whose shortest repr is the decimal that came in.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _scalar(value: Any) -> Scalar | None:
    """A bare condition value: string, bool or number (as Decimal); None if it is none of them."""
    if isinstance(value, str | bool):
        return value
    if _is_number(value):
        return _decimal(value)
    return None


#: What is wrong with a condition: the place below the field (`("regex",)`, `("in", 2)`) and why.
_Problem: TypeAlias = tuple[Loc, str]


def _condition(field: str, raw: Any) -> Condition | _Problem:
    """The parsed condition, or where and why it is wrong."""
    on_tags = field == "tags"
    try:
        if isinstance(raw, Mapping):
            return _operator_condition(field, raw)
        bare = _scalar(raw) if raw is not None else None
    except PydanticCustomError as error:
        return (), error.message()
    if bare is None:
        return (), "must be a string, a number, a boolean or a mapping of operators"
    if on_tags and not isinstance(bare, str):
        return (), "on tags only a bare string or {contains: <string>} applies"
    return Condition(field, equals=bare)


def _operator_condition(field: str, raw: Mapping[Any, Any]) -> Condition | _Problem:
    if not raw:
        return (), "an operator mapping must not be empty"
    unknown = [op for op in raw if op not in OPERATORS]
    if unknown:
        return (), f"unknown operator {_shown(unknown[0])}; operators are {', '.join(OPERATORS)}"
    if field == "tags":
        others = [op for op in raw if op != "contains"]
        if others:
            return (
                (),
                f"operator {others[0]!r} does not apply to tags: use a string or {{contains: x}}",
            )
    elif "contains" in raw:
        return (), "operator 'contains' applies only to tags"
    parts: dict[str, Any] = {}
    for op, operand in raw.items():
        try:
            parts.update(_operand(op, operand))
        except PydanticCustomError as error:
            return (op,), error.message()
        except RegexError as error:
            return (op,), str(error)
    return Condition(field, **parts)


def _operand(op: str, operand: Any) -> dict[str, Any]:
    """One operator's operand as Condition fields; raises saying what is wrong with it."""
    if op == "in":
        if not isinstance(operand, list | tuple) or not operand:
            raise _fail("'in' needs a non-empty list of values")
        values = [_scalar(v) if v is not None else None for v in operand]
        if any(v is None for v in values):
            raise _fail("'in' values must be strings, numbers or booleans")
        return {"one_of": tuple(values)}
    if op == "regex":
        if not isinstance(operand, str):
            raise _fail("'regex' needs a string pattern")
        return {"pattern": RulePattern(operand)}
    if op in COMPARISONS:
        if not _is_number(operand):
            raise _fail(f"{op!r} needs a number")
        return {op: _decimal(operand)}
    if not isinstance(operand, str):  # contains, on tags
        raise _fail("'contains' needs a string")
    return {"contains": operand}


def _is_condition_field(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    if name.startswith(ATTRIBUTE_PREFIX):
        return len(name) > len(ATTRIBUTE_PREFIX)
    return name in CONDITION_FIELDS


def _when(value: Any, info: ValidationInfo) -> dict[str, Condition]:
    if not isinstance(value, Mapping):
        raise _fail("must be a mapping of field to condition ({} always holds)")
    rule_id = info.data.get("id")
    named = f"rule {_shown(rule_id)}: " if isinstance(rule_id, str) else ""
    conditions: dict[str, Condition] = {}
    errors: list[tuple[Loc, str, Any]] = []
    for name, raw in value.items():
        if not _is_condition_field(name):
            expected = ", ".join(CONDITION_FIELDS)
            message = f"unknown field {_shown(name)}: use {expected} or attributes.<key>"
            errors.append(((str(name),), message, raw))
            continue
        parsed = _condition(name, raw)
        if isinstance(parsed, tuple):
            below, message = parsed
            errors.append(((name, *below), named + message, raw))
        else:
            conditions[name] = parsed
    if errors:
        raise _invalid("when", errors)
    return conditions


def _when_to_wire(when: dict[str, Condition]) -> dict[str, Any]:
    return {name: condition.to_wire() for name, condition in when.items()}


When = Annotated[dict[str, Condition], PlainValidator(_when), PlainSerializer(_when_to_wire)]


class ClassTarget(_Model):
    """Where a rule (or the default) puts an item."""

    service_line: ServiceLine
    complexity: Complexity

    @property
    def service_class(self) -> ServiceClass:
        return ServiceClass(self.service_line, self.complexity)

    def to_wire(self) -> dict[str, str]:
        return {"service_line": self.service_line, "complexity": self.complexity}


class Rule(_Model):
    id: NonBlank
    when: When = Field(default_factory=dict)
    then: ClassTarget

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == DEFAULT_RULE_ID or value.startswith(BUILTIN_RULE_PREFIX):
            raise _fail(
                f"{value!r} is reserved for the classifier's own rule ids "
                f"({DEFAULT_RULE_ID!r}, {BUILTIN_RULE_PREFIX}<service_line>)"
            )
        return value

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "when": _when_to_wire(self.when),
            "then": self.then.to_wire(),
        }


class Classification(_Model):
    rules: tuple[Rule, ...] = ()
    default: ClassTarget | None = None

    @field_validator("rules", mode="before")
    @classmethod
    def _at_most_max_rules(cls, rules: Any) -> Any:
        if isinstance(rules, list | tuple) and len(rules) > MAX_RULES:
            raise _fail(f"has {len(rules)} rules; an agreement has at most {MAX_RULES}")
        return rules

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> Classification:
        seen: set[str] = set()
        errors: list[tuple[Loc, str, Any]] = []
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                errors.append((("rules", index, "id"), f"duplicate rule id {rule.id!r}", rule.id))
            seen.add(rule.id)
        if errors:
            raise _invalid("Classification", errors)
        return self

    def to_wire(self) -> dict[str, Any]:
        return {
            "rules": [rule.to_wire() for rule in self.rules],
            "default": self.default.to_wire() if self.default else None,
        }


# --- pricing ------------------------------------------------------------------------------------

ALL: Final = "all"
ScopeEntry: TypeAlias = Literal["all"] | tuple[Complexity, ...]
Scope: TypeAlias = Literal["all"] | dict[ServiceLine, ScopeEntry]


def _scope(value: Any) -> Scope:
    if value == ALL:
        return ALL
    if not isinstance(value, Mapping):
        raise _fail('must be "all" or a mapping of service line to "all" or a list of complexities')
    scope: dict[ServiceLine, ScopeEntry] = {}
    errors: list[tuple[Loc, str, Any]] = []
    for line, entry in value.items():
        if line not in SERVICE_LINES:
            errors.append(
                (
                    (str(line),),
                    f"unknown service line; expected one of {', '.join(SERVICE_LINES)}",
                    line,
                )
            )
        elif entry == ALL:
            scope[line] = ALL
        elif isinstance(entry, list | tuple) and all(c in COMPLEXITIES for c in entry):
            # Kept in the canonical order, without repeats.
            scope[line] = tuple(c for c in COMPLEXITIES if c in entry)
        else:
            errors.append(((line,), f'must be "all" or a list of {", ".join(COMPLEXITIES)}', entry))
    if errors:
        raise _invalid("scope", errors)
    return scope


def _scope_to_wire(scope: Scope) -> Any:
    if scope == ALL:
        return ALL
    return {line: entry if entry == ALL else list(entry) for line, entry in scope.items()}


class Tier(_Model):
    name: NonBlank
    #: None: unbounded (only the last tier).
    up_to: PositiveQuantity | None = None
    fee: MoneyText
    scope: Annotated[Scope, PlainValidator(_scope), PlainSerializer(_scope_to_wire)] = ALL

    def covers(self, service_class: ServiceClass) -> bool:
        """Whether this tier's scope includes `service_class`."""
        if self.scope == ALL:
            return True
        entry = self.scope.get(service_class.service_line)
        return entry == ALL or (entry is not None and service_class.complexity in entry)

    def to_wire(self, currency: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "up_to": None if self.up_to is None else format_decimal(self.up_to),
            "fee": format_money(self.fee, currency),
            "scope": _scope_to_wire(self.scope),
        }


class Weights(_Model):
    """Weighted units per item of each complexity."""

    basic: Quantity
    standard: Quantity
    complex: Quantity

    def of(self, complexity: Complexity) -> Decimal:
        weight: Decimal = getattr(self, complexity)
        return weight


class ScopePolicy(_Model):
    mode: Literal["upgrade", "surcharge"] = "upgrade"
    min_items: Annotated[StrictInt, Field(ge=1, le=10**12)] = 1
    out_of_scope_rate: MoneyText = Decimal("0")


class Pricing(_Model):
    weights: Weights
    unit_basis: dict[ServiceLine, Literal["units"]] = Field(default_factory=dict)
    tiers: tuple[Tier, ...]
    overage_rate: MoneyText | None = None
    scope_policy: ScopePolicy = ScopePolicy()

    @field_validator("tiers")
    @classmethod
    def _at_least_one(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        # Checked here rather than with min_length, which also fires (as "0 items") when a
        # tier is merely invalid.
        if not tiers:
            raise _fail("needs at least one tier")
        return tiers

    @model_validator(mode="after")
    def _tier_ladder(self) -> Pricing:
        errors: list[tuple[Loc, str, Any]] = []
        last = len(self.tiers) - 1
        for index, tier in enumerate(self.tiers):
            if tier.name in (earlier.name for earlier in self.tiers[:index]):
                errors.append(
                    (("tiers", index, "name"), f"duplicate tier name {tier.name!r}", tier.name)
                )
            up_to_loc = ("tiers", index, "up_to")
            if tier.up_to is None and index != last:
                errors.append(
                    (up_to_loc, "only the last tier may be unbounded (up_to: null)", None)
                )
            below = self.tiers[index - 1].up_to if index else None
            if tier.up_to is not None and below is not None and tier.up_to <= below:
                message = (
                    f"tiers must be strictly ascending: {format_decimal(tier.up_to)} is not "
                    f"above the previous tier's {format_decimal(below)}"
                )
                errors.append((up_to_loc, message, tier.up_to))
        if self.tiers[last].up_to is not None and self.overage_rate is None:
            message = "required when the last tier is bounded (it has an up_to)"
            errors.append((("overage_rate",), message, None))
        if errors:
            raise _invalid("Pricing", errors)
        return self

    def counts_units(self, service_line: ServiceLine) -> bool:
        """Whether items of this line weigh their `units` (else each item counts 1)."""
        return self.unit_basis.get(service_line) == "units"

    def to_wire(self, currency: str) -> dict[str, Any]:
        policy = self.scope_policy
        return {
            "weights": {c: format_decimal(self.weights.of(c)) for c in COMPLEXITIES},
            "unit_basis": dict(self.unit_basis),
            "tiers": [tier.to_wire(currency) for tier in self.tiers],
            "overage_rate": (
                None if self.overage_rate is None else format_money(self.overage_rate, currency)
            ),
            "scope_policy": {
                "mode": policy.mode,
                "min_items": policy.min_items,
                "out_of_scope_rate": format_money(policy.out_of_scope_rate, currency),
            },
        }


# --- the agreement ------------------------------------------------------------------------------


class Agreement(_Model):
    client_id: ClientId
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    currency: CurrencyCode
    timezone: TimezoneName = "UTC"
    #: First day billed under this agreement, in its timezone; None: always in force.
    effective_from: DateValue | None = None
    classification: Classification = Classification()
    pricing: Pricing
    #: Assigned by the store (1, 2, ...); see the module docstring.
    version: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _strings_and_nesting(cls, data: Any) -> Any:
        errors = _text_problems(data)
        if errors:
            raise _invalid("Agreement", errors)
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
        errors: list[tuple[Loc, str, Any]] = []
        for loc, amount in amounts:
            places = _decimal_places(amount)
            if places > digits:
                message = f"has {places} decimal places; {self.currency} allows at most {digits}"
                errors.append((loc, message, f"{amount:f}"))
        if errors:
            raise _invalid("Agreement", errors)
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
                errors.append((loc, problem, _shown(value)))
        elif isinstance(value, Mapping | list | tuple):
            if len(loc) >= MAX_NESTING:
                errors.append((loc, f"nested deeper than {MAX_NESTING} levels", "..."))
                continue
            if isinstance(value, Mapping):
                for key, item in value.items():
                    problem = _text_problem(key) if isinstance(key, str) else None
                    if problem:
                        errors.append(((*loc, key), f"field name {problem}", _shown(key)))
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


def load_agreement_yaml(text: str) -> Agreement:
    """An agreement from a YAML document of the §3 shape. ValueError if it is not YAML or not a
    mapping; a pydantic ValidationError (a ValueError too) if it is not a valid agreement."""
    try:
        data = yaml.load(text, Loader=_DecimalLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    except RecursionError:  # a backstop: compose_node bounds the depth first
        raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(data, Mapping):
        raise ValueError("an agreement YAML document must be a mapping")
    return parse_agreement(data)


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


def parse_agreement_body(raw: bytes, media_type: str = "application/json") -> Agreement:
    """An agreement from an HTTP body: JSON (numbers kept exact) or, for a YAML media type, YAML.

    AgreementTooLarge over MAX_BODY_BYTES or when its wire form would not fit a Kafka record;
    another ValueError (a pydantic ValidationError for an invalid agreement) saying what is wrong
    otherwise: invalid UTF-8 (with its byte offset), invalid JSON or YAML, nesting deeper than
    MAX_NESTING."""
    if len(raw) > MAX_BODY_BYTES:
        raise AgreementTooLarge(f"the body is {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"the body is not valid UTF-8: byte {error.start} ({error.reason})"
        ) from None
    if media_type in YAML_MEDIA_TYPES:
        agreement = load_agreement_yaml(text)
    else:
        if json_nesting(text) > MAX_NESTING:
            raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels")
        try:
            data = json.loads(text, parse_float=Decimal)  # exact decimals
        except json.JSONDecodeError as error:
            raise ValueError(
                f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
        except RecursionError:  # a backstop: json_nesting bounds the depth first
            raise ValueError(f"not accepted: nested deeper than {MAX_NESTING} levels") from None
        agreement = parse_agreement(data)
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
