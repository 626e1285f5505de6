"""What metering keeps of each classified item, and which items are late. Pure: no I/O.
(Whether a key was counted before, and the per-day sums, are the database's: `store._COUNT_BATCH`.)

Counts are kept per client, class and UTC day; a period in any timezone is read as its whole
days and, at each end, the items themselves (shared/ledger/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import msgspec

from shared.contracts.workitems import ClassifiedWorkItem
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES
from shared.domain.periods import Period, period_of
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED

SLOT_SECONDS = 15 * 60
#: Years whose instants lie in a period in every timezone (datetime's range is 1..9999).
_SAFE_YEARS = (1, 9999)


class Facts(msgspec.Struct, frozen=True, omit_defaults=True):
    """The fields of an item the rules read that metering keeps no column for."""

    queue: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, bool | int | float | str] | None = None


class MeteredItem(msgspec.Struct, frozen=True):
    """What metering keeps of a classified item (a Struct: built once per item on the hot
    path, where a frozen dataclass's `__init__` costs several times as much)."""

    client_id: str
    item_id: str
    completed_at: datetime
    service_line: str
    complexity: str
    units: int
    #: None when the item did not say (counted as 0).
    handling_seconds: int | None
    rule_id: str | None
    agreement_version: int | None
    received_at: datetime | None = None
    late: bool = False
    source: str | None = None
    opened_at: datetime | None = None
    #: What else the rules read, kept so the item can be classified again; encoded into the
    #: ledger's JSON with the rest of the row (`Raw`: already-encoded `Facts`, as written).
    facts: Facts | msgspec.Raw | None = None


decode_facts = msgspec.json.Decoder(Facts).decode


def metered_item(item: ClassifiedWorkItem) -> MeteredItem:
    facts = (
        None
        if item.queue is None and item.title is None and item.tags is None and not item.attributes
        else Facts(item.queue, item.title, item.tags, item.attributes)
    )
    return MeteredItem(
        client_id=item.client_id,
        item_id=item.id,
        completed_at=item.completed_at,
        service_line=item.service_line or UNCLASSIFIED,
        complexity=item.complexity or NO_COMPLEXITY,
        units=item.units,
        handling_seconds=item.handling_seconds,
        rule_id=item.rule_id,
        agreement_version=item.agreement_version,
        received_at=item.received_at,
        source=item.source,
        opened_at=item.opened_at,
        facts=facts,
    )


def why_unmeterable(item: MeteredItem, tz: str) -> str | None:
    """Why metering cannot keep `item` (`None` when it can), decided before anything is written:
    a class the ledger cannot hold (usage and closes would later fail on it), or a completion
    time that lies in no period of its client's timezone."""
    unclassified = item.service_line == UNCLASSIFIED
    if not unclassified and item.service_line not in SERVICE_LINES:
        return f"service_line {item.service_line!r} is not one of {', '.join(SERVICE_LINES)}"
    if not unclassified and item.complexity not in COMPLEXITIES:
        return f"complexity {item.complexity!r} is not one of {', '.join(COMPLEXITIES)}"
    if unclassified and item.complexity != NO_COMPLEXITY:
        return f"complexity {item.complexity!r} on an item without a service_line"
    if _SAFE_YEARS[0] < item.completed_at.year < _SAFE_YEARS[1]:
        return None  # at least a day from either end of datetime's range: a period in every zone
    try:
        period_of_item(item, "UTC")
        period_of_item(item, tz)
    except (ValueError, OverflowError) as error:
        return f"completed_at {item.completed_at.isoformat()} lies in no period: {error}"
    return None


def first_copies(items: Iterable[MeteredItem]) -> dict[tuple[str, str], MeteredItem]:
    """The first copy of each `(client_id, item_id)` key, in batch order: the copy that counts
    when a batch holds an item twice (SPEC §2: a re-sent item counts once, as first received)."""
    firsts: dict[tuple[str, str], MeteredItem] = {}
    for item in items:
        firsts.setdefault((item.client_id, item.item_id), item)
    return firsts


def flag_late(
    items: Iterable[MeteredItem],
    *,
    timezone_of: Callable[[str], str],
    closed: set[tuple[str, str]],
) -> list[MeteredItem]:
    """Mark items whose period (in the client's timezone) is already closed for the client."""
    if not closed:  # the usual case: no item's period needs working out
        return [item if not item.late else _with_late(item, False) for item in items]
    flagged = []
    for item in items:
        period = period_of_item(item, timezone_of(item.client_id)).key
        late = (item.client_id, period) in closed
        flagged.append(item if late == item.late else _with_late(item, late))
    return flagged


def period_of_item(item: MeteredItem, tz: str) -> Period:
    """The item's period in `tz`, computed once per 15-minute slot: every IANA offset is a
    multiple of 15 minutes, so all of a slot lies in one month in any zone."""
    seconds = int(item.completed_at.timestamp())
    return _period_of_slot(seconds - seconds % SLOT_SECONDS, tz)


@functools.lru_cache(maxsize=1 << 16)
def _period_of_slot(slot_seconds: int, tz: str) -> Period:
    return period_of(datetime.fromtimestamp(slot_seconds, UTC), tz)


def _with_late(item: MeteredItem, late: bool) -> MeteredItem:
    return msgspec.structs.replace(item, late=late)
