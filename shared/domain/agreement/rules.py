"""Classification of a work item into a service class (SPEC §4). Pure: no I/O, no clock.

Order: the client's rules (the first whose every condition holds), then the client's
`default`, then the built-in keyword classifier; an item none of them places is unclassified
(`classify` returns None).

An item is a mapping (a decoded JSON object) or any object with the work item's attributes
(`shared.contracts.workitems.WorkItem`); a field that is absent or None is missing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeAlias, cast

from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.classification import Condition, Rule, Scalar
from shared.domain.agreement.fields import (
    ATTRIBUTE_PREFIX,
    BUILTIN_RULE_PREFIX,
    DEFAULT_RULE_ID,
    SERVICE_LINES,
    Complexity,
    ServiceClass,
    ServiceLine,
)

#: A decoded JSON object, or any object with the work item's attributes.
ItemLike: TypeAlias = Mapping[str, Any] | object


@dataclass(frozen=True, slots=True)
class Classification:
    """Where an item goes and which rule put it there (`default`, `builtin:<line>` or a
    client rule's id)."""

    service_line: ServiceLine
    complexity: Complexity
    rule_id: str

    @property
    def service_class(self) -> ServiceClass:
        return ServiceClass(self.service_line, self.complexity)


def classify(item: ItemLike, agreement: Agreement | None) -> Classification | None:
    """The item's class, or None when it is unclassified."""
    if agreement is not None:
        for rule in agreement.classification.rules:
            if rule_matches(rule, item):
                return Classification(rule.then.service_line, rule.then.complexity, rule.id)
        default = agreement.classification.default
        if default is not None:
            return Classification(default.service_line, default.complexity, DEFAULT_RULE_ID)
    line = builtin_service_line(item)
    if line is None:
        return None
    complexity = complexity_for(_field(item, "handling_seconds"))
    return Classification(line, complexity, f"{BUILTIN_RULE_PREFIX}{line}")


# --- client rules -------------------------------------------------------------------------------


class _Missing:
    """A field the item does not have: every condition on it is false."""


MISSING: Final = _Missing()


def rule_matches(rule: Rule, item: ItemLike) -> bool:
    """Every condition of the rule holds (an empty `when` always holds)."""
    return all(condition_holds(cond, _field(item, name)) for name, cond in rule.when.items())


def condition_holds(condition: Condition, value: Any) -> bool:
    """SPEC §3 semantics for one field's value (MISSING when the item lacks the field)."""
    if value is MISSING:
        return False
    if condition.field == "tags":
        wanted = condition.equals if condition.equals is not None else condition.contains
        return isinstance(wanted, str) and _has_tag(value, wanted)
    if condition.equals is not None and not _equals(value, condition.equals):
        return False
    if condition.one_of is not None and not any(_equals(value, v) for v in condition.one_of):
        return False
    # An RE2 search (SPEC §3): linear in the text whatever the pattern, so no rule can stall
    # the classifier; `(?i)` in the pattern ignores case, nothing else does.
    if condition.pattern is not None and not (
        isinstance(value, str) and condition.pattern.search(value)
    ):
        return False
    bounds = (condition.gte, condition.gt, condition.lte, condition.lt)
    if any(bound is not None for bound in bounds):
        return _within(_number(value), condition)
    return True


def _field(item: ItemLike, name: str) -> Any:
    if name.startswith(ATTRIBUTE_PREFIX):
        attributes = _get(item, "attributes")
        if not isinstance(attributes, Mapping):
            return MISSING
        value = attributes.get(name[len(ATTRIBUTE_PREFIX) :], MISSING)
    else:
        value = _get(item, name)
    if name == "units" and value is None:
        return 1  # SPEC §2: units defaults to 1, so it is never missing
    return MISSING if value is None else value


def _get(item: ItemLike, name: str) -> Any:
    if _is_mapping(type(item)):
        return cast(Mapping[str, Any], item).get(name)
    return getattr(item, name, None)


#: Whether each type of item seen is a Mapping, asked once per type: `isinstance(item, Mapping)`
#: is an ABC check, and asked four times an item it was a third of the built-in classification.
_MAPPING_TYPES: dict[type, bool] = {}


def _is_mapping(kind: type) -> bool:
    known = _MAPPING_TYPES.get(kind)
    if known is None:
        known = _MAPPING_TYPES[kind] = issubclass(kind, Mapping)
    return known


def _equals(value: Any, expected: Scalar) -> bool:
    # Type-aware: a bool is not a number (True != 1) and "12" is not 12.
    if isinstance(expected, bool):
        return isinstance(value, bool) and value is expected
    if isinstance(expected, str):
        return isinstance(value, str) and value.casefold() == expected.casefold()
    number = _number(value)
    return number is not None and number == expected


def _has_tag(tags: Any, wanted: str) -> bool:
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        return False
    folded = wanted.casefold()
    return any(isinstance(tag, str) and tag.casefold() == folded for tag in tags)


def _number(value: Any) -> Decimal | None:
    """The value as an exact Decimal if it is a number (not a bool, not a numeric string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        value = Decimal(repr(value))  # the decimal literal the float was parsed from
    if isinstance(value, Decimal) and value.is_finite():
        return value
    return None


def _within(number: Decimal | None, condition: Condition) -> bool:
    if number is None:
        return False
    return (
        (condition.gte is None or number >= condition.gte)
        and (condition.gt is None or number > condition.gt)
        and (condition.lte is None or number <= condition.lte)
        and (condition.lt is None or number < condition.lt)
    )


# --- built-in classifier ------------------------------------------------------------------------

# Back-office vocabulary per service line. A space in a phrase stands for any run of spaces,
# hyphens or underscores ("month-end close", "data_entry"); the rest is regex (plurals).
BUILTIN_VOCABULARY: Final[dict[ServiceLine, tuple[str, ...]]] = {
    "data_entry": (
        "data entry", "data capture", "indexing", "digiti[sz]ation", "digiti[sz]ing",
        "keying", "scanning", "forms? processing",
    ),
    "accounting": (
        "invoices?", "invoicing", "ledgers?", "reconciliations?", "reconciling", "ap", "ar",
        "a/p", "a/r", "accounts payable", "accounts receivable", "journals?", "journal entry",
        "month end close", "month end", "expenses?", "expense reports?", "billing disputes?",
        "accounting", "bookkeeping",
    ),
    "hr": (
        "payroll", "payslips?", "on ?boarding", "off ?boarding", "benefits?", "leaves?",
        "timesheets?", "time sheets?", "hiring", "new hires?", "recruitment", "recruiting",
        "employees?", "hr", "human resources",
    ),
    "customer_support": (
        "inquiry", "inquiries", "enquiry", "enquiries", "complaints?", "refunds?", "chats?",
        "calls?", "call backs?", "callbacks?", "customers?", "customer service",
    ),
    "it_support": (
        "passwords?", "password resets?", "laptops?", "vpn", "networks?", "networking",
        "logins?", "log in", "access requests?", "printers?", "e ?mails?", "software",
        "hardware", "it support", "help ?desk", "wi ?fi",
    ),
    "procurement": (
        "purchase orders?", "po", "vendors?", "suppliers?", "sourcing", "rfqs?", "rfps?",
        "requisitions?", "procurement", "purchasing",
    ),
}  # fmt: skip


def _phrase(text: str) -> str:
    # "on ?boarding": an optional separator; "data entry": at least one.
    text = text.replace(" ?", r"[\s_-]*")
    return text.replace(" ", r"[\s_-]+")


# One pattern for all lines: re.search finds the leftmost match, and at one position the
# alternatives are tried in the §3 line order. Word edges are letters and digits only, so
# "AP_Invoices" holds the words "AP" and "Invoices".
_BUILTIN_PATTERN: Final = re.compile(
    r"(?<![^\W_])(?:"
    + "|".join(
        f"(?P<{line}>" + "|".join(_phrase(p) for p in BUILTIN_VOCABULARY[line]) + ")"
        for line in SERVICE_LINES
    )
    + r")(?![^\W_])",
    re.IGNORECASE,
)


def builtin_service_line(item: ItemLike) -> ServiceLine | None:
    """The service line the built-in vocabulary finds, or None.

    Precedence: `queue`, then `title`, then each tag in order — the first of those holding a
    keyword decides. Within one text the keyword that starts earliest wins ("Refund for
    invoice 12" is customer_support); two keywords starting at the same place go to the line
    listed first in §3.
    """
    for text in _builtin_texts(item):
        line = _keyword_line(text)
        if line is not None:
            return line
    return None


def _builtin_texts(item: ItemLike) -> list[str]:
    """queue, title, then each tag: the texts the built-in classifier reads, in order."""
    tags = _get(item, "tags")
    texts = [_get(item, "queue"), _get(item, "title")]
    texts += tags if isinstance(tags, list | tuple) else []
    return [text for text in texts if isinstance(text, str)]


@functools.lru_cache(maxsize=1 << 14)
def _keyword_line(text: str) -> ServiceLine | None:
    """Memoised: queues and titles repeat, and the search is most of a classification."""
    match = _BUILTIN_PATTERN.search(text)
    if match is None:
        return None
    for line in SERVICE_LINES:
        if match.group(line) is not None:
            return line
    return None  # unreachable: a match is always in one line's group


def complexity_for(handling_seconds: Any) -> Complexity:
    """Under 10 minutes basic, under an hour standard, else complex; unknown effort standard."""
    seconds = handling_seconds if type(handling_seconds) is int else _number(handling_seconds)
    if seconds is None:
        return "standard"
    if seconds < 600:
        return "basic"
    if seconds < 3600:
        return "standard"
    return "complex"
