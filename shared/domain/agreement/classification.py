"""An agreement's classification (SPEC §3, §4): rules, their conditions and RE2 patterns. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final, TypeAlias

import re2  # type: ignore[import-untyped]
from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.domain.agreement.fields import (
    ATTRIBUTE_PREFIX,
    BUILTIN_RULE_PREFIX,
    COMPARISONS,
    CONDITION_FIELDS,
    DEFAULT_RULE_ID,
    MAX_PATTERN_LENGTH,
    MAX_RULES,
    OPERATORS,
    AgreementPart,
    Complexity,
    Loc,
    NonBlank,
    ServiceClass,
    ServiceLine,
    fail,
    invalid,
    shown,
    to_decimal,
)

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
        return to_decimal(value)
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
        return (), f"unknown operator {shown(unknown[0])}; operators are {', '.join(OPERATORS)}"
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
            raise fail("'in' needs a non-empty list of values")
        values = [_scalar(v) if v is not None else None for v in operand]
        if any(v is None for v in values):
            raise fail("'in' values must be strings, numbers or booleans")
        return {"one_of": tuple(values)}
    if op == "regex":
        if not isinstance(operand, str):
            raise fail("'regex' needs a string pattern")
        return {"pattern": RulePattern(operand)}
    if op in COMPARISONS:
        if not _is_number(operand):
            raise fail(f"{op!r} needs a number")
        return {op: to_decimal(operand)}
    if not isinstance(operand, str):  # contains, on tags
        raise fail("'contains' needs a string")
    return {"contains": operand}


def _is_condition_field(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    if name.startswith(ATTRIBUTE_PREFIX):
        return len(name) > len(ATTRIBUTE_PREFIX)
    return name in CONDITION_FIELDS


def _when(value: Any, info: ValidationInfo) -> dict[str, Condition]:
    if not isinstance(value, Mapping):
        raise fail("must be a mapping of field to condition ({} always holds)")
    rule_id = info.data.get("id")
    named = f"rule {shown(rule_id)}: " if isinstance(rule_id, str) else ""
    conditions: dict[str, Condition] = {}
    errors: list[tuple[Loc, str, Any]] = []
    for name, raw in value.items():
        if not _is_condition_field(name):
            expected = ", ".join(CONDITION_FIELDS)
            message = f"unknown field {shown(name)}: use {expected} or attributes.<key>"
            errors.append(((str(name),), message, raw))
            continue
        parsed = _condition(name, raw)
        if isinstance(parsed, tuple):
            below, message = parsed
            errors.append(((name, *below), named + message, raw))
        else:
            conditions[name] = parsed
    if errors:
        raise invalid("when", errors)
    return conditions


def _when_to_wire(when: dict[str, Condition]) -> dict[str, Any]:
    return {name: condition.to_wire() for name, condition in when.items()}


When = Annotated[dict[str, Condition], PlainValidator(_when), PlainSerializer(_when_to_wire)]


class ClassTarget(AgreementPart):
    """Where a rule (or the default) puts an item."""

    service_line: ServiceLine
    complexity: Complexity

    @property
    def service_class(self) -> ServiceClass:
        return ServiceClass(self.service_line, self.complexity)

    def to_wire(self) -> dict[str, str]:
        return {"service_line": self.service_line, "complexity": self.complexity}


class Rule(AgreementPart):
    id: NonBlank
    when: When = Field(default_factory=dict)
    then: ClassTarget

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == DEFAULT_RULE_ID or value.startswith(BUILTIN_RULE_PREFIX):
            raise fail(
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


class Classification(AgreementPart):
    rules: tuple[Rule, ...] = ()
    default: ClassTarget | None = None

    @field_validator("rules", mode="before")
    @classmethod
    def _at_most_max_rules(cls, rules: Any) -> Any:
        if isinstance(rules, list | tuple) and len(rules) > MAX_RULES:
            raise fail(f"has {len(rules)} rules; an agreement has at most {MAX_RULES}")
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
            raise invalid("Classification", errors)
        return self

    def to_wire(self) -> dict[str, Any]:
        return {
            "rules": [rule.to_wire() for rule in self.rules],
            "default": self.default.to_wire() if self.default else None,
        }
