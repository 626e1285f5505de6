"""Billing's HTTP API: agreements (§3), period close (§6), invoices (§7).

Each route declares who may call it first (`dependencies=ADMIN_ONLY` or `READERS`), so it is
decided before any input is checked or the body read (SPEC §13): writes take an admin key; reads
an admin key or the client's own key (SPEC §2), which sees its own client's documents only.

No input reaches the store unchecked: path and query parameters are matched against their
patterns (a 422 naming the parameter), bodies are bounded (413) and parsed without recursion
limits to trip over (422), and every response a route can give is in the OpenAPI document.
The checks are the dependencies of `services.billing.deps`; the handlers call the service.
"""

from __future__ import annotations

import logging
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.billing.barrier import BarrierTimeout
from services.billing.deps import (
    BillingRoute,
    BoundedBody,
    CurrentAgreement,
    Now,
    PathClientId,
    PathPeriod,
    QueryClientId,
    QueryPeriod,
    Refusal,
    Service,
    invalid,
    share_methods,
    too_large,
    unknown,
)
from services.billing.openapi import (
    AGREEMENT_BODY_SCHEMA,
    AGREEMENT_SCHEMA,
    CLOSE_BODY_SCHEMA,
    Problem,
    bad_client_id,
    is_invoice_id,
    responses,
    unprocessable,
)
from services.billing.service import KafkaUnavailable
from shared.contracts.invoice import Invoice, InvoiceList, PeriodClose
from shared.domain.agreement.agreement import Agreement, AgreementTooLarge, parse_agreement_body
from shared.domain.periods import Period, period_bounds
from shared.infra.http import ADMIN_ONLY, READERS, ReaderCaller, may_read, scoped_client

log = logging.getLogger(__name__)

router = APIRouter(route_class=BillingRoute)

AgreementBody = Annotated[bytes, Depends(BoundedBody("an agreement body"))]
CloseBody = Annotated[bytes, Depends(BoundedBody("a body"))]
InvoiceIdPath = Annotated[str, Path(json_schema_extra={"maxLength": 128})]

_AGREEMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AGREEMENT_BODY_SCHEMA},
            "application/yaml": {"schema": AGREEMENT_BODY_SCHEMA},
        },
    }
}
_CLOSE_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": CLOSE_BODY_SCHEMA}},
    }
}


def _errors(error: ValidationError) -> list[Problem]:
    return [
        Problem(loc=list(problem["loc"]), msg=str(problem["msg"]).removeprefix("Value error, "))
        for problem in error.errors()
    ]


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type") or "application/json"
    return media.split(";")[0].strip().lower()


def _unavailable(detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


async def agreement_body(
    client_id: PathClientId, raw: AgreementBody, request: Request
) -> Agreement:
    """The PUT body as an agreement for the path's client (JSON or YAML); 413 or 422 if not."""
    try:
        agreement = parse_agreement_body(raw, _media_type(request))
    except AgreementTooLarge as error:
        raise Refusal(too_large(str(error))) from error
    except ValidationError as error:
        raise Refusal(unprocessable(_errors(error))) from error
    except ValueError as error:
        raise invalid(["body"], f"invalid body: {error}") from error
    if agreement.client_id != client_id:
        raise invalid(["client_id"], f"must equal the path's client id {client_id!r}")
    return agreement


async def begun_period(period: PathPeriod, now: Now) -> Period:
    """The path's period, once it has begun somewhere on Earth; 422 before."""
    start, _end = period_bounds(period, "Pacific/Kiritimati")  # the earliest zone on Earth
    if start > now:
        raise invalid(["path", "period"], "has not begun yet")
    return period


async def close_client(raw: CloseBody) -> str | None:
    """The optional close body: `{"client_id": ...}` or nothing (every client)."""
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise invalid(["body"], f"invalid JSON: {error}") from error
    if not isinstance(body, dict) or set(body) - {"client_id"}:
        raise invalid(["body"], 'only {"client_id": ...} is accepted')
    client_id = body.get("client_id")
    if not isinstance(client_id, str | None):
        raise invalid(["body", "client_id"], "must be a string")
    if bad := bad_client_id(client_id, "body"):
        raise Refusal(bad)
    return client_id


@router.put(
    "/v1/agreements/{client_id}",
    summary="Create the next version of an agreement",
    dependencies=ADMIN_ONLY,
    responses=responses(413, 422, 503, ok=AGREEMENT_SCHEMA),
    openapi_extra=_AGREEMENT_BODY,
)
async def put_agreement(
    agreement: Annotated[Agreement, Depends(agreement_body)], service: Service
) -> Response:
    try:
        stored = await service.put_agreement(agreement)
    except KafkaUnavailable as error:
        return _unavailable(str(error))
    return JSONResponse(stored.to_wire())


@router.get(
    "/v1/agreements/{client_id}",
    summary="The current agreement of a client",
    dependencies=READERS,
    responses=responses(404, 422, ok=AGREEMENT_SCHEMA),
)
async def get_agreement(agreement: CurrentAgreement) -> Response:
    return JSONResponse(agreement.to_wire())


@router.post(
    "/v1/periods/{period}/close",
    summary="Close a period and issue its invoices",
    dependencies=ADMIN_ONLY,
    responses=responses(413, 422, 503),
    openapi_extra=_CLOSE_BODY,
)
async def close_period(
    period: Annotated[Period, Depends(begun_period)],
    client_id: Annotated[str | None, Depends(close_client)],
    service: Service,
    now: Now,
) -> PeriodClose:
    try:
        return await service.close(period, client_id=client_id, now=now)
    except BarrierTimeout as error:
        detail = f"not every accepted item is metered yet; nothing closed ({error})"
        raise Refusal(_unavailable(detail)) from error


@router.get(
    "/v1/invoices",
    summary="Issued invoices, optionally by client and period",
    description="A client key lists its own client's invoices (`client_id` left out or its own).",
    dependencies=READERS,
    responses=responses(422),
)
async def list_invoices(
    caller: ReaderCaller, client_id: QueryClientId, period: QueryPeriod, service: Service
) -> InvoiceList:
    key = period.key if period is not None else None
    client = scoped_client(caller, client_id)
    return InvoiceList(invoices=tuple(await service.invoices(client_id=client, period=key)))


@router.get(
    "/v1/invoices/{invoice_id}",
    summary="One invoice",
    description="Another client's invoice is unknown to a client key (404).",
    dependencies=READERS,
    # 422 never comes from this route (a bad id is a 404); documented so the framework's
    # default entry, whose body billing never sends, is not.
    responses=responses(404, 422),
)
async def get_invoice(caller: ReaderCaller, invoice_id: InvoiceIdPath, service: Service) -> Invoice:
    # Anything not shaped like an invoice id (NUL, garbage, too long) names no invoice.
    found = await service.invoice(invoice_id) if is_invoice_id(invoice_id) else None
    if found is None or not may_read(caller, found.client_id):
        raise unknown("invoice", invoice_id)
    return found


share_methods(router)
