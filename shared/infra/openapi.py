"""How a service documents its answers in OpenAPI: one JSON answer (`answer`), a route's own error
answers (`error_responses`), and the answers shared code gives for every route (408 and 413 from
the body guard, 401 and 403 from the key dependencies), added to every operation."""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from fastapi import FastAPI
from pydantic import BaseModel

JSON: Final = "application/json"

#: A JSON Schema, as the OpenAPI document carries it.
JsonSchema = dict[str, Any]
#: The headers of a documented answer: name → its OpenAPI Header Object.
Headers = dict[str, Any]
#: What a route's `responses=` takes: status → its documented answer.
Responses = dict[int | str, dict[str, Any]]

#: `{"detail": "..."}`: how every refusal says why.
DETAIL_SCHEMA: Final[JsonSchema] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
#: A 422 as the services answer it: FastAPI's own `{"detail": [{loc, msg, type}]}` or a route's
#: `{"detail": "what is wrong"}` (intake's `{"errors": [...]}` is documented by intake itself).
VALIDATION_PROBLEM_SCHEMA: Final[JsonSchema] = {
    "type": "object",
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                },
            ]
        }
    },
    "required": ["detail"],
}
#: The header every 503 carries: when to try again.
RETRY_AFTER: Final[Headers] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "string"},
        "required": True,
    }
}
#: The header a 401 names the scheme in.
WWW_AUTHENTICATE: Final[Headers] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
_COMMON_RESPONSES: Final = {
    "408": "The request body was not complete within TIERLINE_BODY_TIMEOUT_SECONDS",
    "413": "The request body is over the service's limit",
}
_AUTH_RESPONSES: Final = {
    "401": "No API key, or one this service does not know",
    "403": "The API key is not good for this endpoint (or a client key names another client)",
}


def answer(
    description: str,
    body: JsonSchema | type[BaseModel] = DETAIL_SCHEMA,
    *,
    headers: Headers | None = None,
) -> dict[str, Any]:
    """One documented JSON answer for `responses=`: its description and its body, as a JSON
    Schema or a pydantic model (then FastAPI adds the model to the document's components)."""
    documented: dict[str, Any] = {"description": description}
    if isinstance(body, dict):
        documented["content"] = {JSON: {"schema": body}}
    else:
        documented["model"] = body
    if headers is not None:
        documented["headers"] = headers
    return documented


def inline_schema(
    model: type[BaseModel], *, mode: Literal["validation", "serialization"] = "serialization"
) -> JsonSchema:
    """`model`'s JSON Schema (as serialized, or as validated for a request body) standing alone:
    each reference to one of its own definitions replaced by the definition, for a route that
    documents its body inline."""
    return _inlined(model.model_json_schema(mode=mode))


def inline_struct_schema(struct: type[msgspec.Struct]) -> JsonSchema:
    """A msgspec Struct's JSON Schema standing alone, as `inline_schema` gives a model's."""
    return _inlined(msgspec.json.schema(struct))


def _inlined(schema: JsonSchema) -> JsonSchema:
    """`schema` with each reference to one of its own `$defs` replaced by the definition."""
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inlined(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"$ref"}:
                return inlined(definitions[value["$ref"].removeprefix("#/$defs/")])
            return {key: inlined(item) for key, item in value.items()}
        if isinstance(value, list):
            return [inlined(item) for item in value]
        return value

    return dict(inlined(schema))


def error_responses(**described: str) -> Responses:
    """`responses=` entries for a route's own error answers, with the body each has:
    `error_responses(**{"404": "No such invoice", "422": "Bad period"})`. A 422 is documented
    as either FastAPI's list of problems or a single `detail` string; any other status as
    `{"detail": "..."}`."""
    return {
        status: answer(description, VALIDATION_PROBLEM_SCHEMA if status == "422" else DETAIL_SCHEMA)
        for status, description in described.items()
    }


def document_common_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds to every operation the answers that shared code gives for it, whatever the route:
    408 and 413 (BodyGuard) everywhere, 401 and 403 (the key dependencies) where a key is
    required. A route's own description of a status wins."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answers = dict(_COMMON_RESPONSES)
            if operation.get("security"):
                answers |= _AUTH_RESPONSES
            for status, description in answers.items():
                operation["responses"].setdefault(status, answer(description))
    return schema


def install_openapi_common_responses(app: FastAPI) -> None:
    """The app's OpenAPI document, once generated, carries `document_common_responses`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_common_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
