"""What `POST /v1/work-items` documents in intake's OpenAPI document: the request body (SPEC §2's
item, as an object, an array or NDJSON lines) and every answer with its real body.

Written out rather than generated from `WorkItem`: pydantic's schema of it would say `null` is
allowed for optional fields and leave out the client id's pattern, so a fuzzer driven by the
document would be told lies. tests/unit/test_intake_openapi.py holds this schema to `WorkItem`.
"""

from __future__ import annotations

from typing import Any, Final

from services.intake.parsing import JSON, MAX_BYTES, MAX_ITEMS, NDJSON
from shared.contracts.intake import InvalidItemsAnswer
from shared.contracts.workitems import MAX_ATTRIBUTE_TEXT, MAX_SAFE_INTEGER
from shared.domain.agreement.fields import CLIENT_ID_PATTERN
from shared.infra.openapi import (
    DETAIL_SCHEMA,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    JsonSchema,
    Responses,
    answer,
    inline_schema,
)

#: Any text without U+0000 (JSON Schema patterns are ECMA-262: `\u0000` is the NUL escape).
_NO_NUL: Final = r"^[^\u0000]*$"
#: RFC 3339 with an offset, in the years 2000..2099 as written (SPEC §2, §13).
_TIMESTAMP: Final = r"^20\d{2}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _text(max_length: int, *, min_length: int = 0) -> JsonSchema:
    schema: JsonSchema = {"type": "string", "maxLength": max_length, "pattern": _NO_NUL}
    if min_length:
        schema["minLength"] = min_length
    return schema


ITEM_SCHEMA: Final[JsonSchema] = {
    "title": "WorkItem",
    "description": (
        "A completed work item (SPEC §2). Optional fields are left out, never null. "
        "completed_at is at most 5 minutes after intake receives it, and lies in the years "
        "2000..2099 also in UTC; opened_at (when the work reached the provider) lies in those "
        "years too and is not after completed_at."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "client_id", "source", "completed_at"],
    "properties": {
        "id": _text(128, min_length=1),
        "client_id": {"type": "string", "pattern": f"^{CLIENT_ID_PATTERN}$"},
        "source": _text(64, min_length=1),
        "completed_at": {"type": "string", "format": "date-time", "pattern": _TIMESTAMP},
        "queue": _text(200),
        "title": _text(500),
        "tags": {"type": "array", "maxItems": 50, "items": _text(64)},
        "units": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
        "handling_seconds": {"type": "integer", "minimum": 0, "maximum": 604_800},
        "opened_at": {"type": "string", "format": "date-time", "pattern": _TIMESTAMP},
        "attributes": {
            "type": "object",
            "maxProperties": 50,
            "propertyNames": _text(MAX_ATTRIBUTE_TEXT),
            "additionalProperties": {
                "anyOf": [
                    {"type": "boolean"},
                    {
                        "type": "number",
                        "minimum": -MAX_SAFE_INTEGER,
                        "maximum": MAX_SAFE_INTEGER,
                    },
                    _text(MAX_ATTRIBUTE_TEXT),
                ]
            },
        },
    },
}

REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": (
        f"One item, an array of items, or NDJSON (one item per line); at most {MAX_ITEMS} "
        f"items and {MAX_BYTES} bytes. Valid UTF-8."
    ),
    "content": {
        JSON: {
            "schema": {
                "anyOf": [
                    ITEM_SCHEMA,
                    # No maxItems: over MAX_ITEMS is a 413 (SPEC §2), not a malformed body.
                    {"type": "array", "items": ITEM_SCHEMA},
                ]
            }
        },
        NDJSON: {"schema": {"type": "string", "description": "one WorkItem (JSON) per line"}},
    },
}

#: The 422 body (SPEC §2), from its one definition.
_ERRORS: Final = inline_schema(InvalidItemsAnswer)


RESPONSES: Final[Responses] = {
    202: answer(
        "Every item is durably in workitems.completed; accepted counts them, duplicates included",
        {
            "type": "object",
            "required": ["accepted"],
            "additionalProperties": False,
            "properties": {"accepted": {"type": "integer", "minimum": 0}},
        },
    ),
    401: answer(
        "No API key or an unknown one",
        DETAIL_SCHEMA,
        headers=WWW_AUTHENTICATE,
    ),
    403: answer("The key is not an intake key", DETAIL_SCHEMA),
    408: answer("The body did not arrive within the deadline", DETAIL_SCHEMA),
    413: answer(
        f"Over {MAX_ITEMS} items or {MAX_BYTES} bytes, or an item whose record would be over "
        "what Kafka carries (the detail names its index)",
        DETAIL_SCHEMA,
    ),
    415: answer("Not application/json or application/x-ndjson", DETAIL_SCHEMA),
    422: answer(
        "Invalid items, or a body that is not UTF-8 / JSON: every problem with the item's index "
        "and the field's path; nothing was published",
        _ERRORS,
    ),
    503: answer(
        "Kafka cannot take the write now; nothing is lost, retry after Retry-After seconds",
        DETAIL_SCHEMA,
        headers=RETRY_AFTER,
    ),
}
