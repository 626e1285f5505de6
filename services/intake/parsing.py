"""Turning a request body into work items, or into the list of everything wrong with it (SPEC §2).

Pure: no I/O. All or nothing — a body with any invalid item yields only errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError

from shared.events import WorkItem

MAX_ITEMS: Final = 5_000
MAX_BYTES: Final = 10 * 1024 * 1024
JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"


@dataclass(frozen=True)
class ItemError:
    index: int
    loc: tuple[str | int, ...]
    msg: str

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "loc": list(self.loc), "msg": self.msg}


class InvalidItems(Exception):
    def __init__(self, errors: list[ItemError]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


class TooManyItems(Exception):
    pass


class UnsupportedMediaType(Exception):
    pass


def media_type(content_type: str | None) -> str:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (JSON, NDJSON):
        raise UnsupportedMediaType(kind or "none")
    return kind


def parse_work_items(body: bytes, kind: str, *, received_at: datetime) -> list[WorkItem]:
    raw = _decode(body, kind)
    if len(raw) > MAX_ITEMS:
        raise TooManyItems(f"{len(raw)} items; at most {MAX_ITEMS} per request")
    items: list[WorkItem] = []
    errors: list[ItemError] = []
    context = {"received_at": received_at}
    for index, candidate in enumerate(raw):
        if isinstance(candidate, ItemError):
            errors.append(candidate)
            continue
        try:
            items.append(WorkItem.model_validate(candidate, context=context))
        except ValidationError as error:
            errors.extend(
                ItemError(index, tuple(problem["loc"]), _message(problem))
                for problem in error.errors()
            )
    if errors:
        raise InvalidItems(errors)
    return items


def _decode(body: bytes, kind: str) -> list[Any]:
    """The body's items as plain JSON values; an undecodable NDJSON line becomes its error."""
    if kind == NDJSON:
        lines = [line for line in body.split(b"\n") if line.strip()]
        decoded: list[Any] = []
        for index, line in enumerate(lines):
            try:
                decoded.append(orjson.loads(line))
            except orjson.JSONDecodeError as error:
                decoded.append(ItemError(index, (), f"invalid JSON: {error}"))
        return decoded
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidItems([ItemError(0, (), f"invalid JSON: {error}")]) from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise InvalidItems([ItemError(0, (), "the body must be a JSON object or an array of objects")])


def _message(problem: Any) -> str:
    if problem["type"] == "model_type":
        return "each item must be a JSON object"
    msg = str(problem["msg"])
    return msg.removeprefix("Value error, ")
