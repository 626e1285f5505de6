"""`POST /v1/reclassifications` (admin key) and `GET /v1/reclassifications` (admin key or the
client's own key): SPEC §10.

The admin key is checked before the body is read (SPEC §13 "Keys"); the body is then read up to
1 MiB, parsed as strict JSON and checked field by field, each problem a 422 naming where.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.metering import reclassify_store as store
from services.metering.reclassifying import Conflict, Reclassifier
from shared.contracts.reclassification import (
    ReclassificationAnswer,
    ReclassificationRequest,
    Reclassifications,
)
from shared.domain.agreement.agreement import body_text, load_json
from shared.domain.agreement.fields import (
    CLIENT_ID_PATTERN,
    MAX_BODY_BYTES,
    is_client_id,
)
from shared.domain.periods import PeriodError, parse_period
from shared.infra.db import is_transient
from shared.infra.http import (
    ADMIN_ONLY,
    READERS,
    AdminCaller,
    ReaderCaller,
    invalid_parameter,
    scoped_client,
    state_of,
)
from shared.infra.openapi import RETRY_AFTER, answer, error_responses

#: Deadlocks are retried this many times before the request fails.
_ATTEMPTS: Final = 3

ReclassifierDep = Annotated[Reclassifier, Depends(state_of(Reclassifier))]
router = APIRouter(tags=["alignment"])


def _problems(loc: list[str | int], msg: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}, status_code=422
    )


def _parse(raw: bytes) -> tuple[ReclassificationRequest, dict[str, Any]] | JSONResponse:
    if len(raw) > MAX_BODY_BYTES:
        return JSONResponse(
            {"detail": f"a reclassification holds at most {MAX_BODY_BYTES} bytes"},
            status_code=413,
        )
    try:
        body = load_json(body_text(raw))
    except ValueError as error:
        return _problems(["body"], str(error))
    if not isinstance(body, dict):
        return _problems(["body"], "must be a JSON object")
    try:
        request = ReclassificationRequest.model_validate(body)
    except ValidationError as error:
        return JSONResponse(
            {
                "detail": [
                    {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in error.errors(include_url=False, include_context=False)
                ]
            },
            status_code=422,
        )
    return request, body


@router.post(
    "/v1/reclassifications",
    summary="Correct the class of a period's items (by filter, by ids, or by the rules again)",
    response_model=ReclassificationAnswer,
    responses={
        **error_responses(
            **{
                "409": "This id was used before with another body",
                "413": "The body is over 1 MiB",
                "422": "The body is not a valid reclassification; the problem names the field",
            }
        ),
        "503": answer("The database is unavailable; retry later", headers=RETRY_AFTER),
    },
    dependencies=ADMIN_ONLY,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ReclassificationRequest.model_json_schema(mode="validation")
                }
            },
        }
    },
)
async def reclassify(
    caller: AdminCaller, request: Request, reclassifier: ReclassifierDep
) -> ReclassificationAnswer | Response:
    # `dependencies=ADMIN_ONLY` decided first; `caller` is the same key, for the audit trail.
    raw = await request.body()  # the admin key was checked first
    parsed = _parse(raw)
    if isinstance(parsed, Response):
        return parsed
    wanted, body = parsed
    try:
        period = parse_period(wanted.period)
    except PeriodError as error:
        return _problems(["body", "period"], str(error))
    for attempt in range(_ATTEMPTS):
        try:
            return await reclassifier.reclassify(
                wanted, body, period=period, made_by=caller.name, now=datetime.now(UTC)
            )
        except Conflict as conflict:
            return JSONResponse({"detail": str(conflict)}, status_code=409)
        except asyncpg.DeadlockDetectedError:
            if attempt == _ATTEMPTS - 1:
                raise
        except Exception as error:
            if not is_transient(error):
                raise
            return JSONResponse(
                {"detail": "the database is unavailable; retry later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
    raise AssertionError("unreachable")  # pragma: no cover


@router.get(
    "/v1/reclassifications",
    summary="A client's reclassifications, oldest first: the audit trail of its disputes",
    response_model=Reclassifications,
    description="A client key reads its own client's (`client_id` left out or its own).",
    dependencies=READERS,
    responses=error_responses(**{"422": "A parameter is malformed or client_id is missing"}),
)
async def list_reclassifications(
    caller: ReaderCaller,
    reclassifier: ReclassifierDep,
    client_id: Annotated[
        str | None,
        Query(description=f"The client, `{CLIENT_ID_PATTERN}`; required for an admin key"),
    ] = None,
    period: Annotated[str | None, Query(description="`YYYY-MM`")] = None,
) -> Reclassifications | Response:
    client = scoped_client(caller, client_id)
    if client is None:
        return invalid_parameter("query", "client_id", "is required")
    if not is_client_id(client):
        return invalid_parameter("query", "client_id", f"must match {CLIENT_ID_PATTERN}")
    if period is not None:
        try:
            parse_period(period)
        except PeriodError as error:
            return invalid_parameter("query", "period", str(error))
    records = await store.by_period(reclassifier.pool, client, period)
    return Reclassifications(reclassifications=tuple(records))
