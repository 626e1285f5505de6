"""The invoice of SPEC §6/§7, its CloudEvent, and the answers of the invoice and close routes.

One definition for every place an invoice appears: `build_invoice` returns an `Invoice`, billing
stores it (`billing.invoices.body`), serves it and publishes it in an `InvoiceIssued` envelope,
and the tests read responses with it. Field order is the JSON's order; a line carries only the
fields of its kind (SPEC §13: only `late_adjustment` lines carry `period`, only `service_credit`
lines `service_level`, only `out_of_scope` lines `service_line` and `complexity`), and an invoice
carries `service_levels` only when its agreement version has them (§11).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self, TypeAlias

from pydantic import Field, model_validator

from shared.contracts.wire import (
    CloudEvent,
    Document,
    Fixed,
    OffsetTimestamp,
    Plain,
    UtcTimestamp,
    require_money_in_currency,
)
from shared.domain import rating
from shared.domain.agreement.fields import Complexity, ServiceLine
from shared.domain.attainment import LevelResult
from shared.domain.money import round_money

EVENT_TYPE: Final = "bpo.invoice.issued"
EVENT_SOURCE: Final = "/tierline/billing"

Reason: TypeAlias = Literal["volume", "scope"]
PeriodKey = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}$")]


class TierChoice(Document):
    """A tier and why the usage lands in it: the invoice's, the usage report's, the forecast's."""

    name: str
    reason: Reason

    @classmethod
    def of(cls, decision: rating.TierDecision) -> TierChoice:
        """The tier a decision (SPEC §6) lands in, and why."""
        return cls(name=decision.tier.name, reason=decision.reason)

    @classmethod
    def billed(cls, name: str | None, reason: str | None) -> TierChoice | None:
        """The tier a closed period was billed at, as billing recorded it; None when it was
        closed unbilled (no agreement in force). A closed period's usage keeps it (SPEC §13)."""
        if name is None or reason is None:
            return None
        return cls.model_validate({"name": name, "reason": reason})


class TierFeeLine(Document):
    kind: Literal["tier_fee"] = "tier_fee"
    description: str
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class OutOfScopeLine(Document):
    kind: Literal["out_of_scope"] = "out_of_scope"
    description: str
    service_line: ServiceLine
    complexity: Complexity
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class OverageLine(Document):
    kind: Literal["overage"] = "overage"
    description: str
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class LateAdjustmentLine(Document):
    kind: Literal["late_adjustment"] = "late_adjustment"
    description: str
    period: PeriodKey
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class ServiceCreditLine(Document):
    kind: Literal["service_credit"] = "service_credit"
    description: str
    service_level: str
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class CommitmentTrueUpLine(Document):
    kind: Literal["commitment_true_up"] = "commitment_true_up"
    description: str
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


InvoiceLine = Annotated[
    TierFeeLine
    | OutOfScopeLine
    | OverageLine
    | ServiceCreditLine
    | LateAdjustmentLine
    | CommitmentTrueUpLine,
    Field(discriminator="kind"),
]


class ServiceLevelReport(Document):
    """One level of a period (SPEC §11): the invoice's `service_levels` and the live report."""

    id: str
    measured: int
    met: int
    attainment_percent: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$")] | None
    target_percent: Plain
    missed: bool

    @classmethod
    def of(cls, result: LevelResult) -> ServiceLevelReport:
        return cls.model_validate(result.to_wire())


class BilledClass(Document):
    """A class's billable usage in the period."""

    service_line: ServiceLine
    complexity: Complexity
    items: int
    units: int
    weighted_units: Plain


class InvoiceUsage(Document):
    items: int
    weighted_units: Plain
    by_class: tuple[BilledClass, ...]


class Invoice(Document):
    """SPEC §7's `data`: money carries exactly the currency's minor digits."""

    invoice_id: str
    client_id: str
    period: PeriodKey
    period_start: OffsetTimestamp
    period_end: OffsetTimestamp
    currency: str
    agreement_version: int
    tier: TierChoice
    usage: InvoiceUsage
    lines: tuple[InvoiceLine, ...]
    total: Fixed
    issued_at: UtcTimestamp
    #: Only when the rating version has service levels; left out of the JSON otherwise.
    service_levels: tuple[ServiceLevelReport, ...] | None = Field(
        default=None, exclude_if=lambda levels: levels is None
    )

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        require_money_in_currency(self.currency, self.lines, self.total)
        return self


class InvoiceIssued(CloudEvent[Invoice]):
    """SPEC §7's CloudEvents 1.0 envelope (structured mode) around an invoice."""

    type: Literal["bpo.invoice.issued"] = EVENT_TYPE
    source: Literal["/tierline/billing"] = EVENT_SOURCE

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceIssued:
        return cls(
            id=invoice.invoice_id,
            subject=invoice.client_id,
            time=invoice.issued_at,
            data=invoice,
        )


class InvoiceList(Document):
    """`GET /v1/invoices`."""

    invoices: tuple[Invoice, ...]


class Unbilled(Document):
    """A client with usage but no agreement in force: no invoice for the period (SPEC §6)."""

    client_id: str
    items: int


class PeriodClose(Document):
    """`POST /v1/periods/{period}/close`."""

    period: PeriodKey
    invoices: tuple[Invoice, ...]
    unbilled: tuple[Unbilled, ...]


def invoice_line(line: rating.InvoiceLine, currency: str) -> InvoiceLine:
    """A rated line as the wire carries it: money rounded to `currency`'s minor digits."""
    quantity = line.quantity
    unit_price = round_money(line.unit_price, currency)
    amount = round_money(line.amount, currency)
    description = line.description
    if line.kind == "tier_fee":
        return TierFeeLine(
            description=description, quantity=quantity, unit_price=unit_price, amount=amount
        )
    if line.kind == "overage":
        return OverageLine(
            description=description, quantity=quantity, unit_price=unit_price, amount=amount
        )
    if line.kind == "out_of_scope":
        assert line.service_line is not None and line.complexity is not None
        return OutOfScopeLine(
            description=description,
            service_line=line.service_line,
            complexity=line.complexity,
            quantity=quantity,
            unit_price=unit_price,
            amount=amount,
        )
    if line.kind == "service_credit":
        assert line.service_level is not None
        return ServiceCreditLine(
            description=description,
            service_level=line.service_level,
            quantity=quantity,
            unit_price=unit_price,
            amount=amount,
        )
    if line.kind == "commitment_true_up":
        return CommitmentTrueUpLine(
            description=description, quantity=quantity, unit_price=unit_price, amount=amount
        )
    assert line.period is not None
    return LateAdjustmentLine(
        description=description,
        period=line.period,
        quantity=quantity,
        unit_price=unit_price,
        amount=amount,
    )
