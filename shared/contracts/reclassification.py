"""Reclassifications and notes (SPEC §10, §13): the request a provider sends to correct items'
classes, what metering answers and keeps as the audit trail, and the note billing issues when
the correction lands in a closed, invoiced period.

The request is strict like a work item: no coercion, unknown fields refused, every string valid
Unicode without U+0000. Classes on the wire are `{service_line, complexity}` objects, or null for
unclassified.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.contracts.invoice import EVENT_SOURCE, PeriodKey
from shared.contracts.wire import (
    CloudEvent,
    Document,
    Fixed,
    Plain,
    UtcTimestamp,
    require_money_in_currency,
)
from shared.contracts.workitems import _TEXT, ClientId, ItemId
from shared.domain.agreement.fields import (
    COMPLEXITIES,
    SERVICE_LINES,
    Complexity,
    ServiceClass,
    ServiceLine,
)

#: The most item ids one reclassification may name (the body's 1 MiB bounds it too).
MAX_ITEM_IDS: Final = 100_000
#: What a note's `reason` says: `reclassification <id>: <reason>`.
NOTE_REASON: Final = "reclassification {id}: {reason}"
#: The CloudEvent type of a note (SPEC §8, §10).
NOTE_EVENT_TYPE: Final = "bpo.invoice.adjusted"

ReclassificationId = Annotated[str, StringConstraints(min_length=1, max_length=128), _TEXT]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1_000), _TEXT]
RuleIdText = Annotated[str, StringConstraints(min_length=1, max_length=200), _TEXT]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ClassDoc(_Strict):
    """A class on the wire."""

    service_line: ServiceLine
    complexity: Complexity

    @classmethod
    def of(cls, service_class: ServiceClass | None) -> ClassDoc | None:
        if service_class is None:
            return None
        return cls(service_line=service_class.service_line, complexity=service_class.complexity)

    @property
    def service_class(self) -> ServiceClass:
        return ServiceClass(self.service_line, self.complexity)


class Match(_Strict):
    """Which of the period's items a reclassification selects: every key given must hold."""

    service_line: ServiceLine | None = None
    complexity: Complexity | None = None
    rule_id: RuleIdText | None = None
    status: Literal["classified", "unclassified"] | None = None
    item_ids: Annotated[list[ItemId], Field(max_length=MAX_ITEM_IDS)] | None = None


class ReclassificationRequest(_Strict):
    """`POST /v1/reclassifications`: move the matched items to `to` (a class), or classify them
    again with the client's current agreement (`"rules"`)."""

    id: ReclassificationId
    client_id: ClientId
    period: PeriodKey
    match: Match = Match()
    to: ClassDoc | Literal["rules"]
    reason: Reason

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("id", "client_id", "period", "match", "to", "reason"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key}: null is not a value")
        return data


class Moved(Document):
    """Items that moved from one class to another (null: unclassified)."""

    from_: ClassDoc | None = Field(alias="from")
    to: ClassDoc | None
    items: int
    units: int
    weighted_units: Plain

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
    )


class ReclassificationAnswer(Document):
    """What `POST /v1/reclassifications` answers (and a replay answers again, verbatim)."""

    id: str
    client_id: str
    period: PeriodKey
    items: int
    moved: tuple[Moved, ...]
    period_status: Literal["open", "closed"]


class ReclassificationRecord(Document):
    """One entry of the audit trail: who made it (the key's name), when, its body, what it moved."""

    id: str
    client_id: str
    period: PeriodKey
    made_by: str
    made_at: UtcTimestamp
    body: dict[str, object]
    items: int
    moved: tuple[Moved, ...]
    period_status: Literal["open", "closed"]


class Reclassifications(Document):
    reclassifications: tuple[ReclassificationRecord, ...]


# --- notes (billing) ------------------------------------------------------------------------


class AdjustmentLine(Document):
    kind: Literal["adjustment"] = "adjustment"
    quantity: Plain
    unit_price: Fixed
    amount: Fixed


class Note(Document):
    """A credit or debit note on a closed period's invoice (SPEC §10, §13 "Notes")."""

    note_id: str
    client_id: str
    invoice_id: str
    period: PeriodKey
    currency: str
    reclassification: str
    reason: str
    lines: tuple[AdjustmentLine, ...]
    total: Fixed
    issued_at: UtcTimestamp

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        require_money_in_currency(self.currency, self.lines, self.total)
        return self


class Notes(Document):
    notes: tuple[Note, ...]


class NoteIssued(CloudEvent[Note]):
    """A note on `billing.invoices`: SPEC §7's envelope (structured mode, no `ce_` headers)."""

    type: Literal["bpo.invoice.adjusted"] = NOTE_EVENT_TYPE
    source: Literal["/tierline/billing"] = EVENT_SOURCE

    @classmethod
    def of(cls, note: Note) -> NoteIssued:
        return cls(id=note.note_id, subject=note.client_id, time=note.issued_at, data=note)


def note_id(client_id: str, period: str, k: int) -> str:
    """`<client>-<period>-n<k>` (SPEC §10)."""
    return f"{client_id}-{period}-n{k}"


def adjustment_line(amount: Decimal) -> AdjustmentLine:
    return AdjustmentLine(quantity=Decimal(1), unit_price=amount, amount=amount)


#: The vocabulary, for error messages and schemas.
CLASS_VOCABULARY: Final = {"service_line": SERVICE_LINES, "complexity": COMPLEXITIES}
