"""Dead letters and their redrive (SPEC §12): which dead letters a request chooses and what becomes
of each one. Pure: no I/O, no clock. The Kafka reads and writes are in `deadletters.py`, the
`ops.redrives` SQL in `redrive_store.py`, the routes in `redrive_api.py`.

A redrive re-publishes a dead letter's original key and value (and the original record's own
headers) to its origin topic, marked with a `redriven_from: <dlq topic>/<partition>/<offset>`
header. Each dead letter is redriven at most once, and so is each origin: one bad `agreements`
record may be dead-lettered once per consumer (SPEC §13), and a batch redelivered after a failed
commit may dead-letter the same record twice; those copies share an origin.

An origin is a whole record, or one item of a batch record (a JSON array of items on
`workitems.*`): a consumer that fails one item dead-letters that item alone, its value the item's
own document and its `origin_item` header the item's 0-based index in the array. Items of one
record share (topic, partition, offset) and differ by that index, so each is redriven once — as a
record of one item, which the consumers take as they take any single item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final

from shared.contracts.topics import CONSUMED_TOPICS, dlq

#: The headers `shared.infra.kafka.dead_letter` adds to a dead letter; a redriven record carries the
#: original record's other headers, without these.
DEAD_LETTER_HEADERS: Final = frozenset(
    {
        "error",
        "error_type",
        "origin_topic",
        "origin_partition",
        "origin_offset",
        "origin_timestamp",
        "origin_item",
    }
)
#: The header that marks a redriven record: `<dlq topic>/<partition>/<offset>` it came from.
REDRIVEN_FROM: Final = "redriven_from"
#: Most dead letters one list page or one redrive request takes.
MAX_PAGE: Final = 1000
#: Most dead letters one request examines while looking for matches (a page may then hold fewer
#: than `limit` entries; its `next_cursor` goes on from where the scan stopped).
MAX_SCAN: Final = 100_000
#: How much of a dead letter's value `show` returns, in characters.
VALUE_PREVIEW_CHARS: Final = 4000

_MAX_PARTITION: Final = 2**31 - 1
_MAX_OFFSET: Final = 2**63 - 1
#: An item index is stored as a PostgreSQL integer; a larger one is no index a record can hold.
_MAX_ITEM: Final = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_POSITION = re.compile(r"([0-9]{1,10}):([0-9]{1,19})")


class UnknownTopic(ValueError):
    """A name that is neither a consumed topic nor its dead-letter topic."""


def resolve_topic(name: str) -> tuple[str, str]:
    """(dead-letter topic, origin topic) for `name`, which may be either: `workitems.completed`
    and `workitems.completed.dlq` both name the dead letters of `workitems.completed`."""
    for origin in CONSUMED_TOPICS:
        if name in (origin, dlq(origin)):
            return dlq(origin), origin
    known = ", ".join(f"{t} or {dlq(t)}" for t in CONSUMED_TOPICS)
    raise UnknownTopic(f"topic {name!r} has no dead letters; it must be one of {known}")


@dataclass(frozen=True, order=True)
class Position:
    """Where a record is in its topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_position(text: str) -> Position:
    """`"P:O"` (a partition and an offset, both non-negative integers) → Position."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET, e.g. 0:42")
    partition, offset = int(match[1]), int(match[2])
    if partition > _MAX_PARTITION or offset > _MAX_OFFSET:
        raise ValueError(f"{text!r} is out of range")
    return Position(partition, offset)


def item_index(text: str) -> int | None:
    """An `origin_item` header's index (decimal digits, at most `_MAX_ITEM`), or None if it is
    not one."""
    if not _DIGITS.fullmatch(text) or int(text) > _MAX_ITEM:
        return None
    return int(text)


@dataclass(frozen=True)
class Origin:
    """Where a dead letter's record was when a consumer gave up on it, and which item of that
    record it is (`item`: its 0-based index in the record's array; None: the whole record)."""

    topic: str
    partition: int
    offset: int
    item: int | None = None

    def __str__(self) -> str:
        record = f"{self.topic}/{self.partition}/{self.offset}"
        return record if self.item is None else f"{record} item {self.item}"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a `<topic>.dlq`, as Kafka holds it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)

    def header(self, name: str) -> str | None:
        """The last value of header `name`, decoded (never raises on bad bytes)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value.decode(errors="replace")
        return found

    def header_texts(self) -> dict[str, str]:
        return {key: value.decode(errors="replace") for key, value in self.headers}

    @property
    def origin(self) -> Origin | None:
        """The origin its headers name, or None when they are missing or malformed (an
        `origin_item` header too: absent means the whole record, present it must be an index)."""
        topic = self.header("origin_topic")
        partition = self.header("origin_partition")
        offset = self.header("origin_offset")
        item = self.header("origin_item")
        if not topic or partition is None or offset is None:
            return None
        if not (_DIGITS.fullmatch(partition) and _DIGITS.fullmatch(offset)):
            return None
        if int(partition) > _MAX_PARTITION or int(offset) > _MAX_OFFSET:
            return None
        index = item_index(item) if item is not None else None
        if item is not None and index is None:
            return None
        return Origin(topic, int(partition), int(offset), index)


@dataclass(frozen=True)
class Filter:
    """What a list or an `all` redrive chooses; every condition given must hold."""

    error_contains: str | None = None
    error_type: str | None = None
    partition: int | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.partition is not None and record.partition != self.partition:
            return False
        if self.error_type is not None and record.header("error_type") != self.error_type:
            return False
        if self.error_contains is not None:
            error = record.header("error") or ""
            return self.error_contains.casefold() in error.casefold()
        return True


@dataclass(frozen=True)
class RedriveMark:
    """A dead letter that was redriven (a row of `ops.redrives`)."""

    dlq_topic: str
    dead_letter: Position
    origin: Origin
    redriven_at: datetime
    by: str
    #: Where the re-published record landed in the origin topic.
    published: Position


def mark_of(record: DeadLetterRecord, marks: Iterable[RedriveMark]) -> RedriveMark | None:
    """The redrive of this dead letter, or of another dead letter of the same origin (record, or
    item of a batch record: another item of the same record is another origin)."""
    origin = record.origin
    same_origin = None
    for mark in marks:
        if mark.dlq_topic == record.topic and mark.dead_letter == record.position:
            return mark
        if origin is not None and mark.origin == origin:
            same_origin = mark
    return same_origin


class Outcome(Enum):
    REDRIVEN = "redriven"
    #: A dry run: this one would be redriven.
    WOULD_REDRIVE = "would_redrive"
    #: Already redriven (this dead letter, or another of the same origin).
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    """What becomes of one chosen dead letter. `outcome` None: it is to be published."""

    position: Position
    outcome: Outcome | None
    reason: str | None = None
    record: DeadLetterRecord | None = None
    mark: RedriveMark | None = None
    #: Where the re-published copy landed in the origin topic (outcome REDRIVEN).
    published: Position | None = None


def refusal(record: DeadLetterRecord, origin_topic: str) -> str | None:
    """Why this dead letter cannot be redriven to `origin_topic`, or None if it can."""
    origin = record.origin
    if origin is None:
        return (
            "its origin_topic, origin_partition or origin_offset header is missing or malformed, "
            "or its origin_item header is not an item index"
        )
    if origin.topic not in CONSUMED_TOPICS:
        return f"its origin topic {origin.topic!r} is not a topic Tierline consumes"
    if origin.topic != origin_topic:
        return f"its origin topic {origin.topic!r} is not {origin_topic!r} (the topic asked for)"
    if record.value is None:
        # Published as is, a null value is a tombstone: on `agreements` it would delete one.
        return "it has no value (null): re-published, it would be a tombstone"
    return None


def plan(
    chosen: Sequence[Position],
    found: Mapping[Position, DeadLetterRecord],
    marks: Iterable[RedriveMark],
    *,
    dlq_topic: str,
    origin_topic: str,
) -> list[Decision]:
    """What to do with each chosen dead letter, in the order chosen (a repeat is dropped)."""
    marks = list(marks)
    decisions: list[Decision] = []
    seen: set[Position] = set()
    taken: dict[Origin, Position] = {}
    for position in chosen:
        if position in seen:
            continue
        seen.add(position)
        record = found.get(position)
        if record is None:
            reason = f"{dlq_topic} holds no record at {position}"
            decisions.append(Decision(position, Outcome.FAILED, reason))
            continue
        refused = refusal(record, origin_topic)
        if refused is not None:
            decisions.append(Decision(position, Outcome.FAILED, refused, record))
            continue
        mark = mark_of(record, marks)
        if mark is not None:
            reason = f"already redriven at {mark.redriven_at.isoformat()} by {mark.by}"
            if mark.dlq_topic != record.topic or mark.dead_letter != position:
                item = mark.origin.item
                what = "its origin record" if item is None else f"its origin item {item}"
                reason += f" ({what}, from {mark.dlq_topic} {mark.dead_letter})"
            decisions.append(Decision(position, Outcome.SKIPPED, reason, record, mark))
            continue
        assert record.origin is not None  # refusal() checked it
        first = taken.get(record.origin)
        if first is not None:
            reason = f"the same origin ({record.origin}) as {first}, redriven in this request"
            decisions.append(Decision(position, Outcome.SKIPPED, reason, record))
            continue
        taken[record.origin] = position
        decisions.append(Decision(position, None, None, record))
    return decisions


def republished_headers(record: DeadLetterRecord) -> list[tuple[str, bytes]]:
    """The original record's headers (those `dead_letter` added removed), plus `redriven_from`."""
    kept = [
        (key, value)
        for key, value in record.headers
        if key not in DEAD_LETTER_HEADERS and key != REDRIVEN_FROM
    ]
    kept.append((REDRIVEN_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()))
    return kept


@dataclass(frozen=True)
class Tally:
    redriven: int
    would_redrive: int
    skipped: int
    failed: int


def tally(outcomes: Iterable[Outcome]) -> Tally:
    counts = dict.fromkeys(Outcome, 0)
    for outcome in outcomes:
        counts[outcome] += 1
    return Tally(
        redriven=counts[Outcome.REDRIVEN],
        would_redrive=counts[Outcome.WOULD_REDRIVE],
        skipped=counts[Outcome.SKIPPED],
        failed=counts[Outcome.FAILED],
    )


def value_preview(value: bytes | None, limit: int = VALUE_PREVIEW_CHARS) -> tuple[str, bool]:
    """The value as text (bad bytes replaced) cut at `limit` characters, and whether it is whole."""
    text = (value or b"").decode(errors="replace")
    if len(text) > limit:
        return text[:limit], False
    return text, True


def key_text(key: bytes | None) -> str | None:
    return key.decode(errors="replace") if key is not None else None
