"""The items API's decisions (SPEC §10 "Items", §13): which items a request selects, the opaque
paging cursor, and the item document built from what the ledger holds. Pure: no I/O.

The CSV export is formatted by PostgreSQL (`items_store.py`) from the same inputs this module
gives it — the classes (`class_of`), the weights of each class (`ClassWeights`, from the one
`rating.weighted_units`) and the period key — so a CSV row and the document of the same item say
the same (tests/integration/test_items_api.py compares them).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

import msgspec

from shared.contracts.items import ItemChange, ItemClass, ItemDocument, Status
from shared.contracts.wire import utc_instant
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES, ServiceClass
from shared.domain.agreement.pricing import Pricing
from shared.domain.money import format_decimal
from shared.domain.rating import weighted_units
from shared.domain.usage import class_of

#: SPEC §10: `limit` 1..1,000, 100 when left out.
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_ITEM_ID: Final = 128
#: A cursor is at most this long (an id of 128 code points, escaped, in base64).
MAX_CURSOR: Final = 1024


class StoredItem(msgspec.Struct, frozen=True):
    """An item as `metering.items` holds it (`service_line` 'unclassified', `complexity` 'none'
    when the classifier could not place it)."""

    client_id: str
    item_id: str
    source: str | None
    completed_at: datetime
    opened_at: datetime | None
    received_at: datetime | None
    late: bool
    service_line: str
    complexity: str
    rule_id: str | None
    agreement_version: int | None
    units: int
    handling_seconds: int | None


class StoredChange(msgspec.Struct, frozen=True):
    """A row of `metering.item_history`."""

    item_id: str
    at: datetime
    from_line: str
    from_complexity: str
    to_line: str
    to_complexity: str
    reclassification: str
    reason: str


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends: the last item's instant and id. Pages go on strictly after it, in
    (completed_at, id) order with ids compared by code point."""

    completed_at: datetime
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemSelection:
    """The items a list or an export selects: one client's, completed within [start, end) (its
    period in the timezone of its current agreement), narrowed by the filters given."""

    client_id: str
    period: str
    start: datetime
    end: datetime
    service_line: str | None = None
    complexity: str | None = None
    rule_id: str | None = None
    status: Status | None = None

    def first(self) -> Position:
        """The position before every item of the selection (ids are never empty)."""
        return Position(self.start, "")


# --- the cursor ---------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR: Final = msgspec.json.Decoder(tuple[int, str])
_encode: Final = msgspec.json.Encoder().encode
#: Instants a cursor may name: SPEC's years 2000..2099, with a day's margin either side.
_EARLIEST: Final = datetime(1999, 12, 31, tzinfo=UTC)
_LATEST: Final = datetime(2100, 1, 2, tzinfo=UTC)


def encode_cursor(position: Position) -> str:
    """Opaque to clients: URL-safe base64 (no padding) of `[microseconds since 1970, id]`."""
    delta = position.completed_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return base64.urlsafe_b64encode(_encode((micros, position.item_id))).decode().rstrip("=")


def decode_cursor(text: str) -> Position:
    """The position a cursor of `encode_cursor` names; a ValueError saying it is not one."""
    problem = "is not a cursor this API gave (pass next_cursor as it is)"
    if not text or len(text) > MAX_CURSOR or not text.isascii():
        raise ValueError(problem)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        micros, item_id = _CURSOR.decode(raw)
        instant = _EPOCH + timedelta(microseconds=micros)
    except (binascii.Error, ValueError, msgspec.DecodeError, OverflowError):
        raise ValueError(problem) from None
    if not _EARLIEST <= instant <= _LATEST or not 1 <= len(item_id) <= MAX_ITEM_ID:
        raise ValueError(problem)
    if "\x00" in item_id or encode_cursor(Position(instant, item_id)) != text:
        raise ValueError(problem)
    return Position(instant, item_id)


# --- the document -------------------------------------------------------------------------------


class ItemWeights:
    """An item's weighted units at an agreement's weights (`rating.weighted_units`: weights
    [complexity] × units or 1), as the document writes them; "0" without an agreement or for an
    unclassified item. Remembered per class and units: an export asks millions of times for a
    few hundred answers."""

    _MEMO: Final = 100_000

    def __init__(self, pricing: Pricing | None) -> None:
        self.pricing = pricing
        self._known: dict[tuple[ServiceClass, int], str] = {}

    def text(self, service_class: ServiceClass | None, units: int) -> str:
        if service_class is None or self.pricing is None:
            return "0"
        key = (service_class, units)
        found = self._known.get(key)
        if found is None:
            found = format_decimal(weighted_units(self.pricing, service_class, 1, units))
            if len(self._known) < self._MEMO:
                self._known[key] = found
        return found


def item_document(
    item: StoredItem, history: list[StoredChange], *, period: str, weights: ItemWeights
) -> ItemDocument:
    """The item as SPEC §10 shows it: its class as it stands now (null when unclassified), its
    weighted units at `weights` (the client's current agreement's), its changes of class oldest
    first, and `period`, the key of the period its completion lies in (in the timezone of the
    client's current agreement)."""
    service_class = class_of(item.service_line, item.complexity)
    return ItemDocument(
        client_id=item.client_id,
        id=item.item_id,
        source=item.source,
        completed_at=utc_instant(item.completed_at),
        opened_at=None if item.opened_at is None else utc_instant(item.opened_at),
        received_at=None if item.received_at is None else utc_instant(item.received_at),
        period=period,
        late=item.late,
        status="unclassified" if service_class is None else "classified",
        service_line=None if service_class is None else service_class.service_line,
        complexity=None if service_class is None else service_class.complexity,
        rule_id=None if service_class is None else item.rule_id,
        agreement_version=item.agreement_version,
        units=item.units,
        handling_seconds=item.handling_seconds,
        weighted_units=weights.text(service_class, item.units),
        history=[_change(change) for change in history] if history else [],
    )


def _change(change: StoredChange) -> ItemChange:
    return ItemChange(
        at=utc_instant(change.at),
        from_=_item_class(change.from_line, change.from_complexity),
        to=_item_class(change.to_line, change.to_complexity),
        reclassification=change.reclassification,
        reason=change.reason,
    )


def _item_class(service_line: str, complexity: str) -> ItemClass | None:
    found = class_of(service_line, complexity)
    return None if found is None else ItemClass(found.service_line, found.complexity)


# --- what the SQL export is given -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassWeights:
    """Each class's weighted units as `per_item + per_unit × units`, in the order of
    `SERVICE_LINES` × `COMPLEXITIES` (line-major): what PostgreSQL needs to write an item's
    weighted units without a second copy of the rule. `rating.weighted_units` is linear in
    (items, units), so its values at (1, 0) and (0, 1) give it exactly."""

    lines: tuple[str, ...]
    complexities: tuple[str, ...]
    per_item: tuple[Decimal, ...]
    per_unit: tuple[Decimal, ...]


def class_weights(pricing: Pricing | None) -> ClassWeights:
    """The weights of `pricing` (every class 0 without an agreement)."""
    classes = [ServiceClass(line, c) for line in SERVICE_LINES for c in COMPLEXITIES]

    def at(items: int, units: int) -> tuple[Decimal, ...]:
        if pricing is None:
            return tuple(Decimal(0) for _ in classes)
        return tuple(weighted_units(pricing, c, items, units) for c in classes)

    return ClassWeights(SERVICE_LINES, COMPLEXITIES, at(1, 0), at(0, 1))


# --- content negotiation ------------------------------------------------------------------------

Answer = Literal["json", "csv", "ndjson"]
_MEDIA: Final[dict[str, Answer]] = {
    "application/json": "json",
    "application/*": "json",
    "*/*": "json",
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
}


def negotiate(accept: str | None) -> Answer:
    """What `Accept` asks for: the media type of highest quality among JSON, CSV and NDJSON
    (the first listed on a tie); JSON when it names none of them or is absent."""
    best: tuple[float, int, Answer] | None = None
    for index, part in enumerate((accept or "").split(",")):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        answer = _MEDIA.get(media.lower())
        if answer is None:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and (best is None or (quality, -index) > (best[0], best[1])):
            best = (quality, -index, answer)
    return "json" if best is None else best[2]
