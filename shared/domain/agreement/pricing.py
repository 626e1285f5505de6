"""An agreement's pricing (SPEC §3, §5): tiers, weights, the scope policy. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    field_validator,
    model_validator,
)

from shared.domain.agreement.fields import (
    COMPLEXITIES,
    SERVICE_LINES,
    AgreementPart,
    Complexity,
    Loc,
    MoneyText,
    NonBlank,
    PositiveQuantity,
    Quantity,
    ServiceClass,
    ServiceLine,
    fail,
    invalid,
)
from shared.domain.money import format_decimal, format_money

# --- pricing ------------------------------------------------------------------------------------

ALL: Final = "all"
ScopeEntry: TypeAlias = Literal["all"] | tuple[Complexity, ...]
Scope: TypeAlias = Literal["all"] | dict[ServiceLine, ScopeEntry]


def _scope(value: Any) -> Scope:
    if value == ALL:
        return ALL
    if not isinstance(value, Mapping):
        raise fail('must be "all" or a mapping of service line to "all" or a list of complexities')
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
        raise invalid("scope", errors)
    return scope


def _scope_to_wire(scope: Scope) -> Any:
    if scope == ALL:
        return ALL
    return {line: entry if entry == ALL else list(entry) for line, entry in scope.items()}


class Tier(AgreementPart):
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


class Weights(AgreementPart):
    """Weighted units per item of each complexity."""

    basic: Quantity
    standard: Quantity
    complex: Quantity

    def of(self, complexity: Complexity) -> Decimal:
        weight: Decimal = getattr(self, complexity)
        return weight


class ScopePolicy(AgreementPart):
    mode: Literal["upgrade", "surcharge"] = "upgrade"
    min_items: Annotated[StrictInt, Field(ge=1, le=10**12)] = 1
    out_of_scope_rate: MoneyText = Decimal("0")


class Pricing(AgreementPart):
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
            raise fail("needs at least one tier")
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
            raise invalid("Pricing", errors)
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
