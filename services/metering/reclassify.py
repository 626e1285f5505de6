"""What a reclassification (SPEC §10) does to the items it matched, decided purely.

`reclassify_store` reads the matched items under the client's close lock, `plan` decides which
of them move and where, and the store writes the moves, their history, the counters' deltas and
the audit record in the same transaction. Pure: no I/O, no clock.

An explicit `to` moves every matched item not already in that class and marks it
`reclassification:<id>` (the agreement version stays); `"rules"` classifies each again with the
client's current agreement (rules, default, built-in), as a fresh classification would. An item
whose class does not change is untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from services.metering.counting import Facts
from shared.contracts.reclassification import ClassDoc, Moved, ReclassificationAnswer
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import (
    COMPLEXITIES,
    SERVICE_LINES,
    ServiceClass,
)
from shared.domain.agreement.rules import classify
from shared.domain.rating import weighted_units
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED

#: The UTC days the counters are kept in (as `store._COUNT_BATCH` bins them).
_DAY_SECONDS = 24 * 60 * 60
_DAY_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)

#: Where an item is: a class, or None when unclassified.
Place = ServiceClass | None


class StoredItem(msgspec.Struct, frozen=True):
    """An item as metering keeps it, with what the rules read."""

    item_id: str
    completed_at: datetime
    service_line: str
    complexity: str
    units: int
    handling_seconds: int | None
    rule_id: str | None
    agreement_version: int | None
    late: bool
    source: str | None
    facts: Facts | None

    @property
    def place(self) -> Place:
        return place_of(self.service_line, self.complexity)


def place_of(service_line: str, complexity: str) -> Place:
    """The class metering's columns hold; None for unclassified (or anything not a class)."""
    if service_line in SERVICE_LINES and complexity in COMPLEXITIES:
        return ServiceClass(service_line, complexity)
    return None


def columns_of(place: Place) -> tuple[str, str]:
    """`place` as metering's columns hold it."""
    if place is None:
        return UNCLASSIFIED, NO_COMPLEXITY
    return place.service_line, place.complexity


@dataclass(frozen=True, slots=True)
class Move:
    """One item that changes class."""

    item: StoredItem
    to: Place
    rule_id: str | None
    agreement_version: int | None


@dataclass(frozen=True, slots=True)
class DayDelta:
    """What the moves change in one counter row (client's UTC day and class)."""

    day: datetime
    place: Place
    items: int
    units: int
    handling_seconds: int
    late_items: int


@dataclass(frozen=True)
class Plan:
    moves: list[Move]
    deltas: list[DayDelta]
    moved: tuple[Moved, ...]
    #: Change in the period's late billable items (those a close counts): billing settles it
    #: with the note, so a later close sees only late items that arrive after.
    late_delta: int


Target = ServiceClass | Literal["rules"]


def plan(
    items: Iterable[StoredItem],
    *,
    target: Target,
    reclassification_id: str,
    agreement: Agreement | None,
) -> Plan:
    """The moves of the matched `items`, the counters' deltas and the answer's `moved`."""
    moves = [
        move
        for item in items
        if (move := _move(item, target, reclassification_id, agreement)) is not None
    ]
    return Plan(moves, day_deltas(moves), summarize(moves, agreement), late_delta(moves))


def _move(
    item: StoredItem, target: Target, reclassification_id: str, agreement: Agreement | None
) -> Move | None:
    if target == "rules":
        found = classify(_rule_input(item), agreement)
        to: Place = None if found is None else found.service_class
        if to == item.place:
            return None
        return Move(
            item,
            to,
            None if found is None else found.rule_id,
            None if agreement is None else agreement.version,
        )
    if target == item.place:
        return None
    return Move(item, target, f"reclassification:{reclassification_id}", item.agreement_version)


def _rule_input(item: StoredItem) -> dict[str, Any]:
    """The item as the rules read it (SPEC §3's fields)."""
    fields: dict[str, Any] = {}
    if item.facts is not None:
        fields = {k: v for k, v in msgspec.structs.asdict(item.facts).items() if v is not None}
    fields["source"] = item.source
    fields["units"] = item.units
    if item.handling_seconds is not None:
        fields["handling_seconds"] = item.handling_seconds
    return fields


def day_of(completed_at: datetime) -> datetime:
    """The UTC day (its midnight) the counters keep an item in."""
    seconds = int((completed_at - _DAY_ORIGIN).total_seconds())
    return _day(seconds - seconds % _DAY_SECONDS)


@functools.lru_cache(maxsize=1 << 14)
def _day(offset: int) -> datetime:
    return datetime.fromtimestamp(_DAY_ORIGIN.timestamp() + offset, UTC)


def day_deltas(moves: Iterable[Move]) -> list[DayDelta]:
    """Each move takes its item out of its old class's counter row and into the new one's.
    A late item counts as late only in a class (as metering counts it)."""
    acc: dict[tuple[datetime, tuple[str, str]], list[int]] = {}
    for move in moves:
        item = move.item
        day = day_of(item.completed_at)
        hs = item.handling_seconds or 0
        for place, sign in ((item.place, -1), (move.to, 1)):
            row = acc.setdefault((day, columns_of(place)), [0, 0, 0, 0])
            row[0] += sign
            row[1] += sign * item.units
            row[2] += sign * hs
            row[3] += sign * (1 if item.late and place is not None else 0)
    return [
        DayDelta(day, place_of(*cols), *values)
        for (day, cols), values in sorted(acc.items())
        if any(values)
    ]


def late_delta(moves: Iterable[Move]) -> int:
    return sum(
        (move.to is not None) - (move.item.place is not None) for move in moves if move.item.late
    )


def _order(place: Place) -> tuple[int, ServiceClass | None]:
    return (0, None) if place is None else (1, place)


def summarize(moves: Sequence[Move], agreement: Agreement | None) -> tuple[Moved, ...]:
    """`moved`: one entry per (from, to), with the weighted units in `to` at the current
    weights ("0" to unclassified or without agreement); null sorts before every class."""
    groups: dict[tuple[Place, Place], list[int]] = {}
    for move in moves:
        group = groups.setdefault((move.item.place, move.to), [0, 0])
        group[0] += 1
        group[1] += move.item.units
    entries = []
    for (source, to), (count, units) in sorted(
        groups.items(), key=lambda kv: (_order(kv[0][0]), _order(kv[0][1]))
    ):
        weight = (
            Decimal(0)
            if to is None or agreement is None
            else weighted_units(agreement.pricing, to, count, units)
        )
        entries.append(
            Moved(
                from_=ClassDoc.of(source),
                to=ClassDoc.of(to),
                items=count,
                units=units,
                weighted_units=weight,
            )
        )
    return tuple(entries)


def answer(
    *,
    reclassification_id: str,
    client_id: str,
    period: str,
    moved: tuple[Moved, ...],
    closed: bool,
) -> ReclassificationAnswer:
    return ReclassificationAnswer(
        id=reclassification_id,
        client_id=client_id,
        period=period,
        items=sum(m.items for m in moved),
        moved=moved,
        period_status="closed" if closed else "open",
    )
