"""Intake's 422 of SPEC §2: `{"errors": [{"index", "loc", "msg"}, ...]}`, every invalid item of
a request. One typed definition that intake's parser collects, its route answers with and its
OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WithJsonSchema

from shared.contracts.wire import Document

#: A path inside an item, as JSON writes it: `["tags", 3]`.
Location = Annotated[
    tuple[str | int, ...],
    WithJsonSchema({"type": "array", "items": {"type": ["string", "integer"]}}),
]


class ItemProblem(Document):
    """One problem of one item: its 0-based position in the request, where in it, and why."""

    index: Annotated[int, Field(ge=0)]
    loc: Location
    msg: str


class InvalidItemsAnswer(Document):
    """The 422 of a request with any invalid item: nothing of it was published."""

    errors: Annotated[list[ItemProblem], Field(min_length=1)]
