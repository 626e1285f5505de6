"""What billing's HTTP API documents and answers for bad input: the JSON Schemas of the
agreement and of billing's 422 body (the invoice and insight documents document themselves: their
models in `shared.contracts`; other errors are `shared.infra.openapi`'s `{"detail"}`), the
responses of each route, and the checks of path and query
parameters (a 422 naming the parameter, in the same body the API uses for every 422).

Parameters are declared as plain strings to FastAPI and checked here, so every 422 has one
shape (`{"detail", "errors": [{"loc", "msg"}]}`) whichever app mounts the routers; their
patterns are published in the OpenAPI document through `json_schema_extra`.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypedDict

from fastapi.responses import JSONResponse, Response

from shared.contracts.wire import DECIMAL_PATTERN
from shared.domain.agreement.fields import (
    CLIENT_ID_PATTERN,
    COMPLEXITIES,
    MAX_BODY_BYTES,
    MAX_PATTERN_LENGTH,
    MAX_RULES,
    SERVICE_LINES,
)
from shared.domain.agreement.terms import CLOCK_PATTERN, MAX_LEVELS
from shared.domain.business_time import WEEKDAYS
from shared.domain.money import ISO_4217_MINOR_UNITS
from shared.domain.periods import Period, PeriodError, parse_period, timezone_names
from shared.infra.openapi import (
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    JsonSchema,
    Responses,
    answer,
)

# --- parameters ----------------------------------------------------------------------------------

CLIENT_ID_SCHEMA: Final = {"pattern": f"^{CLIENT_ID_PATTERN}$", "maxLength": 64}
#: YYYY-MM within 2000-01..2099-12 (SPEC §13), as a pattern.
PERIOD_PATTERN: Final = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
PERIOD_SCHEMA: Final = {"pattern": PERIOD_PATTERN, "example": "2026-10"}
#: `<client>-<YYYY-MM>-<revision>` (SPEC §7).
INVOICE_ID_PATTERN: Final = rf"{CLIENT_ID_PATTERN}-[0-9]{{4}}-[0-9]{{2}}-[1-9][0-9]{{0,8}}"
_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_INVOICE_ID: Final = re.compile(INVOICE_ID_PATTERN)


def printable(text: str) -> str:
    """`text` safe to echo in a response: a lone surrogate (or an undecodable byte a path
    smuggled in) becomes a backslash escape, so the answer is valid UTF-8 JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Problem(TypedDict):
    """One entry of a 422's `errors`: where (`["query", "period"]`) and why."""

    loc: list[str | int]
    msg: str


def unprocessable(problems: list[Problem]) -> Response:
    """422 `{"detail": "<where>: <first problem>", "errors": [{"loc", "msg"}, ...]}`."""
    errors = [
        Problem(
            loc=[part if isinstance(part, int) else printable(str(part)) for part in e["loc"]],
            msg=printable(str(e["msg"])),
        )
        for e in problems
    ]
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors}, status_code=422)


def bad_client_id(value: str | None, where: str) -> Response | None:
    """A 422 naming the parameter if `value` is not a client id (SPEC §2's pattern)."""
    if value is None or _CLIENT_ID.fullmatch(value):
        return None
    message = "must be 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
    return unprocessable([{"loc": [where, "client_id"], "msg": message}])


def period_or_error(value: str, where: str) -> Period | Response:
    """The period `value` names, or a 422 Response naming the parameter."""
    try:
        return parse_period(value)
    except PeriodError as error:
        return unprocessable([{"loc": [where, "period"], "msg": str(error)}])


def is_invoice_id(value: str) -> bool:
    """Whether `value` has the shape of an invoice id; anything else names no invoice (404)."""
    return _INVOICE_ID.fullmatch(value) is not None


# --- schemas -------------------------------------------------------------------------------------

_STRING: Final = {"type": "string"}
_DECIMAL: Final = {"type": "string", "pattern": DECIMAL_PATTERN}
_SERVICE_LINE: Final = {"type": "string", "enum": list(SERVICE_LINES)}
_COMPLEXITY: Final = {"type": "string", "enum": list(COMPLEXITIES)}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}


def _object(
    properties: dict[str, Any], *, required: list[str] | None = None, closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


VALIDATION_ERROR_SCHEMA: Final = _object(
    {
        "detail": _STRING,
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": _STRING,
                },
                closed=False,
            ),
        },
    },
    closed=False,
)

_CLASS_TARGET: Final = _object({"service_line": _SERVICE_LINE, "complexity": _COMPLEXITY})
_SCOPE: Final = {
    "anyOf": [
        {"type": "string", "enum": ["all"]},
        {
            "type": "object",
            "propertyNames": {"enum": list(SERVICE_LINES)},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "enum": ["all"]},
                    {"type": "array", "items": _COMPLEXITY},
                ]
            },
        },
    ]
}
_NUMBER_OR_DECIMAL: Final = {"anyOf": [{"type": "number"}, _DECIMAL]}
_CONDITION: Final = {
    "description": "A bare string, number or bool (equal; strings ignoring case), or operators: "
    "in, regex (RE2, at most 1,000 characters), gte/gt/lte/lt, contains (tags only).",
    "anyOf": [
        {"type": ["string", "number", "boolean"]},
        {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "in": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": ["string", "number", "boolean"]},
                },
                "regex": {"type": "string", "maxLength": MAX_PATTERN_LENGTH},
                "gte": {"type": "number"},
                "gt": {"type": "number"},
                "lte": {"type": "number"},
                "lt": {"type": "number"},
                "contains": _STRING,
            },
        },
    ],
}


_PERCENT: Final = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?$",
    "description": "A percent 0..100 as a decimal string (never a JSON number)",
}
_CLOCK_TIME: Final = {"type": "string", "pattern": f"^({CLOCK_PATTERN})$"}


def _terms_schemas(*, stored: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """SPEC §11's optional sections, `service_levels` and `commitment`, as a PUT body has them
    (`stored=False`) or as stored and served (every field given, decimals as strings)."""
    calendar = _object(
        {
            "days": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": list(WEEKDAYS)},
            },
            "hours": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "items": _CLOCK_TIME,
                "description": "Start and end of the working day, local wall-clock time; "
                '"24:00" ends it at midnight',
            },
            "holidays": {"type": "array", "items": {"type": "string", "format": "date"}},
        },
        required=None if stored else ["days", "hours"],
    )
    level = _object(
        {
            "id": {"type": "string", "minLength": 1, "maxLength": 128},
            "service_line": _SERVICE_LINE,
            "complexity": {
                "anyOf": [
                    {"type": "array", "minItems": 1, "items": _COMPLEXITY},
                    {"type": "null"},
                ],
                "description": "Left out or null: every complexity",
            },
            "within_hours": _DECIMAL if stored else _NUMBER_OR_DECIMAL,
            "clock": {"type": "string", "enum": ["elapsed", "business"]},
            "target_percent": _PERCENT,
            "pool_percent": _PERCENT,
        },
        required=None
        if stored
        else ["id", "service_line", "within_hours", "target_percent", "pool_percent"],
    )
    service_levels = _object(
        {
            "at_risk_percent": _PERCENT,
            "calendar": {"anyOf": [calendar, {"type": "null"}]},
            "levels": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_LEVELS,
                "items": level,
                "description": "Ordered; pool_percent adds up to at most 100",
            },
        },
        required=None if stored else ["at_risk_percent", "levels"],
    )
    commitment = _object({"annual_minimum": _DECIMAL})
    return service_levels, commitment


def _agreement_schema(*, stored: bool) -> dict[str, Any]:
    """The agreement of SPEC §3: as a PUT body (`stored=False`) or as stored and served."""
    number = _DECIMAL if stored else _NUMBER_OR_DECIMAL
    tier = _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            "up_to": {"anyOf": [number, {"type": "null"}]},
            "fee": _DECIMAL,
            "scope": _SCOPE,
        },
        required=["name", "fee", "up_to", "scope"] if stored else ["name", "fee"],
    )
    rule = _object(
        {
            "id": {"type": "string", "minLength": 1, "maxLength": 128},
            "when": {"type": "object", "additionalProperties": _CONDITION},
            "then": _CLASS_TARGET,
        },
        required=["id", "when", "then"] if stored else ["id", "then"],
    )
    classification = _object(
        {
            "rules": {"type": "array", "maxItems": MAX_RULES, "items": rule},
            "default": {"anyOf": [_CLASS_TARGET, {"type": "null"}]},
        },
        required=["rules", "default"] if stored else [],
    )
    scope_policy = _object(
        {
            "mode": {"type": "string", "enum": ["upgrade", "surcharge"]},
            "min_items": {"type": "integer", "minimum": 1, "maximum": 10**12},
            "out_of_scope_rate": _DECIMAL,
        },
        required=None if stored else [],
    )
    pricing = _object(
        {
            "weights": _object({c: number for c in COMPLEXITIES}),
            "unit_basis": {
                "type": "object",
                "propertyNames": {"enum": list(SERVICE_LINES)},
                "additionalProperties": {"type": "string", "enum": ["units"]},
            },
            "tiers": {"type": "array", "minItems": 1, "items": tier},
            "overage_rate": {"anyOf": [_DECIMAL, {"type": "null"}]},
            "scope_policy": scope_policy,
        },
        required=None if stored else ["weights", "tiers"],
    )
    service_levels, commitment = _terms_schemas(stored=stored)
    properties: dict[str, Any] = {
        "client_id": {"type": "string", "pattern": f"^{CLIENT_ID_PATTERN}$"},
        "name": {"type": ["string", "null"], "maxLength": 200},
        "currency": {
            "type": "string",
            "enum": sorted(ISO_4217_MINOR_UNITS),
            "description": "ISO 4217",
        },
        "timezone": {"type": "string", "enum": sorted(timezone_names()), "description": "IANA"},
        "effective_from": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "classification": classification,
        "pricing": pricing,
        "service_levels": service_levels,
        "commitment": commitment,
        "version": (
            {"type": "integer", "minimum": 1}
            if stored
            else {"description": "ignored: the store assigns versions"}
        ),
    }
    optional = ("service_levels", "commitment")  # given only when the agreement has them
    return _object(
        properties,
        required=(
            [key for key in properties if key not in optional]
            if stored
            else ["client_id", "currency", "pricing"]
        ),
    )


AGREEMENT_BODY_SCHEMA: Final = _agreement_schema(stored=False)
AGREEMENT_SCHEMA: Final = _agreement_schema(stored=True)


def _template_body_schema() -> dict[str, Any]:
    """An agreement template (SPEC §3): the stored agreement's form without `client_id` and
    `version`, every other field given."""
    left_out = ("client_id", "version")
    return {
        **AGREEMENT_SCHEMA,
        "properties": {
            key: value
            for key, value in AGREEMENT_SCHEMA["properties"].items()
            if key not in left_out
        },
        "required": [key for key in AGREEMENT_SCHEMA["required"] if key not in left_out],
    }


TEMPLATE_BODY_SCHEMA: Final = _template_body_schema()

#: Optional: `{"client_id": ...}` closes the period for that client only.
CLOSE_BODY_SCHEMA: Final = _object(
    {
        "client_id": {
            "anyOf": [{"type": "string", "pattern": f"^{CLIENT_ID_PATTERN}$"}, {"type": "null"}]
        }
    },
    required=[],
)


# --- responses -----------------------------------------------------------------------------------


def responses(*statuses: int, ok: JsonSchema | None = None) -> Responses:
    """The documented responses of a route: 401 and 403 (every billing route takes a key: an
    admin key, or for a read the client's own key), each of `statuses` with its real body, and
    200 with `ok`'s schema when the route has no response model to document it."""
    documented: Responses = {
        401: answer("No key or an unknown key", headers=WWW_AUTHENTICATE),
        403: answer(
            "A key that is not good for this endpoint, or a client key naming another client"
        ),
    }
    if ok is not None:
        documented[200] = answer("OK", ok)
    known = {
        404: answer("Not found"),
        413: answer(f"Body over {MAX_BODY_BYTES} bytes, or too large for Kafka"),
        422: answer("Invalid input: each error names where and why", VALIDATION_ERROR_SCHEMA),
        503: answer("Kafka or the close barrier cannot answer now; retry", headers=RETRY_AFTER),
    }
    for status in statuses:
        documented[status] = known[status]
    return documented
