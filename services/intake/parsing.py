"""Turning a request body into the records intake publishes, or into the list of everything
wrong with it (SPEC §2).

Pure: no I/O. All or nothing — a body with any invalid item yields only errors.

Two paths, one contract. `WorkItem` (pydantic) is the contract of record: its errors, every one
with its index and field, are what a caller sees. It costs about 20 µs an item, so a body is first
decoded in one pass by msgspec against `_FastItem`, which holds the same rules or stricter ones;
a body it takes whole needs nothing more (about 3 µs an item). Anything it refuses, for any
reason, goes through `WorkItem`, which decides. A test holds the fast path to never accepting
what `WorkItem` refuses and to producing the same records when both accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType
from pydantic import ValidationError

from shared.contracts.intake import ItemProblem
from shared.contracts.workitems import (
    FIRST_YEAR,
    LAST_YEAR,
    MAX_FUTURE_SKEW,
    MAX_RECORD_BYTES,
    RFC3339_PATTERN,
    Attributes,
    CompletedWorkItem,
    Tags,
    WorkItem,
    encode_record,
    pack_records,
    time_problem,
)
from shared.domain.agreement.fields import CLIENT_ID_PATTERN

MAX_ITEMS: Final = 5_000
MAX_BYTES: Final = 10 * 1024 * 1024
JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"


class InvalidItems(Exception):
    def __init__(self, errors: list[ItemProblem]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


class TooManyItems(Exception):
    pass


class RecordTooLarge(Exception):
    """An item whose `workitems.completed` record is over what the pipeline carries (413)."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(
            f"item {index}: its record would be {size} bytes, over the {MAX_RECORD_BYTES} "
            "bytes the pipeline carries; shorten its text fields"
        )
        self.index = index


class UnsupportedMediaType(Exception):
    pass


def media_type(content_type: str | None) -> str:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (JSON, NDJSON):
        raise UnsupportedMediaType(kind or "none")
    return kind


def parse_work_items(
    body: bytes, kind: str, *, received_at: datetime, key_source: str
) -> list[CompletedWorkItem]:
    """The `workitems.completed` records of a request's items, or InvalidItems / TooManyItems."""
    fast = _fast_records(body, kind, received_at=received_at, key_source=key_source)
    if fast is not None:
        return fast
    return [
        CompletedWorkItem(**item.__dict__, received_at=received_at, key_source=key_source)
        for item in _checked_items(body, kind, received_at=received_at)
    ]


def client_records(
    records: list[CompletedWorkItem], values: list[bytes]
) -> list[tuple[bytes, bytes]]:
    """The (key, value) Kafka records of a request's encoded items: per client, its items in
    the order sent, as few batch records as fit (shared.contracts.workitems)."""
    by_client: dict[str, list[bytes]] = {}
    for record, value in zip(records, values, strict=True):
        by_client.setdefault(record.client_id, []).append(value)
    messages: list[tuple[bytes, bytes]] = []
    for client_id, documents in by_client.items():
        key = client_id.encode()
        messages += [
            (key, value) for value in pack_records(documents, limit=MAX_RECORD_BYTES - len(key))
        ]
    return messages


def encode_records(records: list[CompletedWorkItem]) -> list[bytes]:
    """The records as Kafka values, or RecordTooLarge naming the first item over the limit."""
    values = [encode_record(record) for record in records]
    for index, value in enumerate(values):
        if len(value) > MAX_RECORD_BYTES:
            raise RecordTooLarge(index, len(value))
    return values


def _checked_items(body: bytes, kind: str, *, received_at: datetime) -> list[WorkItem]:
    """The contract of record: every item through `WorkItem`, every error collected."""
    raw = _decode(body, kind)
    if len(raw) > MAX_ITEMS:
        raise TooManyItems(f"{len(raw)} items; at most {MAX_ITEMS} per request")
    items: list[WorkItem] = []
    errors: list[ItemProblem] = []
    context = {"received_at": received_at}
    for index, candidate in enumerate(raw):
        if isinstance(candidate, ItemProblem):
            errors.append(candidate)
            continue
        try:
            items.append(WorkItem.model_validate(candidate, context=context))
        except ValidationError as error:
            errors.extend(
                ItemProblem(index=index, loc=tuple(problem["loc"]), msg=_message(problem))
                for problem in error.errors()
            )
    if errors:
        raise InvalidItems(errors)
    return items


# --- the fast path --------------------------------------------------------------------------


def _anchored(pattern: str) -> str:
    return rf"\A(?:{pattern})\Z"  # the whole string, as WorkItem's fullmatch (no "$\n")


class _FastItem(msgspec.Struct, forbid_unknown_fields=True):
    """SPEC §2 as `WorkItem` has it, never more lenient: null is refused (a field is either a
    value or absent), no coercion, unknown fields refused, the same bounds and patterns."""

    id: Annotated[str, Meta(min_length=1, max_length=128)]
    client_id: Annotated[str, Meta(pattern=_anchored(CLIENT_ID_PATTERN))]
    source: Annotated[str, Meta(min_length=1, max_length=64)]
    completed_at: Annotated[str, Meta(pattern=_anchored(RFC3339_PATTERN))]
    queue: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    title: Annotated[str, Meta(max_length=500)] | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    units: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    handling_seconds: Annotated[int, Meta(ge=0, le=604_800)] | UnsetType = UNSET
    attributes: Attributes | UnsetType = UNSET
    opened_at: Annotated[str, Meta(pattern=_anchored(RFC3339_PATTERN))] | UnsetType = UNSET


_FAST_BODY = msgspec.json.Decoder(list[_FastItem] | _FastItem)
_FAST_LINE = msgspec.json.Decoder(_FastItem)


def _fast_records(
    body: bytes, kind: str, *, received_at: datetime, key_source: str
) -> list[CompletedWorkItem] | None:
    """The records, if every item passes the fast checks; None sends the body to `WorkItem`."""
    if b"\\u0000" in body:
        return None  # U+0000 (JSON has it only escaped): `WorkItem` says which field
    try:
        if kind == NDJSON:
            items = [_FAST_LINE.decode(line) for line in body.split(b"\n") if line.strip()]
        else:
            decoded = _FAST_BODY.decode(body)
            items = decoded if isinstance(decoded, list) else [decoded]
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # msgspec refuses lone surrogates as malformed, but reads strings as UTF-8 unchecked
        return None
    if len(items) > MAX_ITEMS:
        raise TooManyItems(f"{len(items)} items; at most {MAX_ITEMS} per request")
    latest = received_at + MAX_FUTURE_SKEW
    records = []
    for item in items:
        try:
            completed_at = datetime.fromisoformat(item.completed_at)
            opened_at = None if item.opened_at is UNSET else datetime.fromisoformat(item.opened_at)
        except ValueError:
            return None
        if completed_at > latest or (
            not FIRST_YEAR < completed_at.year < LAST_YEAR and time_problem(completed_at)
        ):
            return None
        if opened_at is not None and (
            opened_at > completed_at
            or (not FIRST_YEAR < opened_at.year < LAST_YEAR and time_problem(opened_at))
        ):
            return None
        records.append(
            CompletedWorkItem(
                id=item.id,
                client_id=item.client_id,
                source=item.source,
                completed_at=completed_at,
                received_at=received_at,
                key_source=key_source,
                queue=None if item.queue is UNSET else item.queue,
                title=None if item.title is UNSET else item.title,
                tags=None if item.tags is UNSET else item.tags,
                units=item.units,
                handling_seconds=None if item.handling_seconds is UNSET else item.handling_seconds,
                attributes=None if item.attributes is UNSET else item.attributes,
                opened_at=opened_at,
            )
        )
    return records


# --- decoding for the checked path ---------------------------------------------------------

_JSON_VALUES = msgspec.json.Decoder()  # integers stay exact at any size, for ±2^53 to judge


def _decode(body: bytes, kind: str) -> list[Any]:
    """The body's items as plain JSON values; an undecodable NDJSON line becomes its error."""
    if kind == NDJSON:
        decoded: list[Any] = []
        start = 0
        for number, line in enumerate(body.split(b"\n"), start=1):
            if line.strip():
                value = _loads(line, line=number, offset=start)
                index = len(decoded)
                decoded.append(
                    ItemProblem(index=index, loc=(), msg=value.msg)
                    if isinstance(value, _Broken)
                    else value
                )
            start += len(line) + 1
        return decoded
    value = _loads(body, line=1, offset=0)
    if isinstance(value, _Broken):
        raise InvalidItems([ItemProblem(index=0, loc=(), msg=value.msg)])
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise InvalidItems(
        [ItemProblem(index=0, loc=(), msg="the body must be a JSON object or an array of objects")]
    )


@dataclass(frozen=True)
class _Broken:
    msg: str


def _loads(text: bytes, *, line: int, offset: int) -> Any:
    """One JSON document (the body, or an NDJSON line starting at `line` and byte `offset` of
    the body), or _Broken saying where it broke."""
    try:
        text.decode()
    except UnicodeDecodeError as error:
        before = text[: error.start]
        at_line = line + before.count(b"\n")
        column = error.start - (before.rfind(b"\n") + 1) + 1
        return _Broken(
            f"invalid UTF-8 at line {at_line}, column {column} "
            f"(byte offset {offset + error.start}): {error.reason}"
        )
    try:
        return _JSON_VALUES.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
        problem = error
    # orjson says where (line, column, character); msgspec alone often cannot
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return _Broken(
            f"invalid JSON at line {line + error.lineno - 1}, column {error.colno}: {error.msg}"
        )
    if isinstance(problem, RecursionError):
        return _Broken("invalid JSON: nested too deeply")
    return _Broken(f"invalid JSON: {problem}")


def _message(problem: Any) -> str:
    if problem["type"] == "model_type":
        return "each item must be a JSON object"
    msg = str(problem["msg"])
    return msg.removeprefix("Value error, ")
