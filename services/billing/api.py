"""Billing's HTTP API: agreements (§3), period close (§6), invoices (§7).

No input reaches the store unchecked: path and query parameters are matched against their
patterns (a 422 naming the parameter), bodies are bounded (413) and parsed without recursion
limits to trip over (422), and every response a route can give is in the OpenAPI document.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from services.billing.barrier import BarrierTimeout
from services.billing.openapi import (
    AGREEMENT_BODY_SCHEMA,
    AGREEMENT_SCHEMA,
    CLIENT_ID_SCHEMA,
    CLOSE_BODY_SCHEMA,
    CLOSE_SCHEMA,
    INVOICE_LIST_SCHEMA,
    INVOICE_SCHEMA,
    PERIOD_SCHEMA,
    bad_client_id,
    is_invoice_id,
    period_or_error,
    printable,
    responses,
    unprocessable,
)
from services.billing.service import BillingService, KafkaUnavailable
from shared.domain.agreement.agreement import AgreementTooLarge, parse_agreement_body
from shared.domain.agreement.fields import MAX_BODY_BYTES
from shared.domain.periods import period_bounds
from shared.infra.http import AdminCaller

log = logging.getLogger(__name__)

ClientIdPath = Annotated[str, Path(json_schema_extra=CLIENT_ID_SCHEMA)]
PeriodPath = Annotated[str, Path(json_schema_extra=PERIOD_SCHEMA)]
InvoiceIdPath = Annotated[str, Path(json_schema_extra={"maxLength": 128})]


def _errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(problem["loc"]), "msg": str(problem["msg"]).removeprefix("Value error, ")}
        for problem in error.errors()
    ]


def too_large(message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=413)


async def read_bounded(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes (by its
    Content-Length or while streaming): never more than `limit` bytes are held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type") or "application/json"
    return media.split(";")[0].strip().lower()


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


class _PathRoute(APIRoute):
    """A route whose 405 names every method of its path in `Allow`. Starlette answers 405 from
    the first route whose path matches and names only that route's methods; GET and PUT of
    /v1/agreements/{client_id} are two routes."""

    path_methods: frozenset[str] = frozenset()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods and self.path_methods:
            allow = ", ".join(sorted(self.path_methods))
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": allow})
        await super().handle(scope, receive, send)


def _share_methods(router: APIRouter) -> None:
    by_path: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, _PathRoute):
            by_path.setdefault(route.path, set()).update(route.methods or ())
    for route in router.routes:
        if isinstance(route, _PathRoute):
            route.path_methods = frozenset(by_path[route.path])


def build_router(service: BillingService) -> APIRouter:
    router = APIRouter(route_class=_PathRoute)

    @router.put(
        "/v1/agreements/{client_id}",
        summary="Create the next version of an agreement",
        responses=responses(AGREEMENT_SCHEMA, 413, 422, 503),
        openapi_extra=_AGREEMENT_BODY,
    )
    async def put_agreement(client_id: ClientIdPath, request: Request, _: AdminCaller) -> Response:
        if bad := bad_client_id(client_id, "path"):
            return bad
        raw = await read_bounded(request)
        if raw is None:
            return too_large(f"an agreement body holds at most {MAX_BODY_BYTES} bytes")
        try:
            agreement = parse_agreement_body(raw, _media_type(request))
        except AgreementTooLarge as error:
            return too_large(str(error))
        except ValidationError as error:
            return unprocessable(_errors(error))
        except ValueError as error:
            return unprocessable([{"loc": ["body"], "msg": f"invalid body: {error}"}])
        if agreement.client_id != client_id:
            return unprocessable(
                [{"loc": ["client_id"], "msg": f"must equal the path's client id {client_id!r}"}]
            )
        try:
            stored = await service.put_agreement(agreement)
        except KafkaUnavailable as error:
            return JSONResponse(
                {"detail": str(error)}, status_code=503, headers={"Retry-After": "5"}
            )
        return JSONResponse(stored.to_wire())

    @router.get(
        "/v1/agreements/{client_id}",
        summary="The current agreement of a client",
        responses=responses(AGREEMENT_SCHEMA, 404, 422),
    )
    async def get_agreement(client_id: ClientIdPath, _: AdminCaller) -> Response:
        if bad := bad_client_id(client_id, "path"):
            return bad
        agreement = await service.agreement(client_id)
        if agreement is None:
            return JSONResponse({"detail": f"no agreement for {client_id}"}, status_code=404)
        return JSONResponse(agreement.to_wire())

    @router.post(
        "/v1/periods/{period}/close",
        summary="Close a period and issue its invoices",
        responses=responses(CLOSE_SCHEMA, 413, 422, 503),
        openapi_extra=_CLOSE_BODY,
    )
    async def close_period(period: PeriodPath, request: Request, _: AdminCaller) -> Response:
        parsed = period_or_error(period, "path")
        if isinstance(parsed, Response):
            return parsed
        now = datetime.now(UTC)
        start, _end = period_bounds(parsed, "Pacific/Kiritimati")  # the earliest zone on Earth
        if start > now:
            return unprocessable([{"loc": ["path", "period"], "msg": "has not begun yet"}])
        client_id: str | None = None
        raw = await read_bounded(request)
        if raw is None:
            return too_large(f"a body holds at most {MAX_BODY_BYTES} bytes")
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                return unprocessable([{"loc": ["body"], "msg": f"invalid JSON: {error}"}])
            if not isinstance(body, dict) or set(body) - {"client_id"}:
                return unprocessable(
                    [{"loc": ["body"], "msg": 'only {"client_id": ...} is accepted'}]
                )
            client_id = body.get("client_id")
            if not isinstance(client_id, str | None):
                return unprocessable([{"loc": ["body", "client_id"], "msg": "must be a string"}])
            if bad := bad_client_id(client_id, "body"):
                return bad
        try:
            result = await service.close(parsed, client_id=client_id, now=now)
        except BarrierTimeout as error:
            return JSONResponse(
                {"detail": f"not every accepted item is metered yet; nothing closed ({error})"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse(result)

    @router.get(
        "/v1/invoices",
        summary="Issued invoices, optionally by client and period",
        responses=responses(INVOICE_LIST_SCHEMA, 422),
    )
    async def list_invoices(
        _: AdminCaller,
        client_id: Annotated[str | None, Query(json_schema_extra=CLIENT_ID_SCHEMA)] = None,
        period: Annotated[str | None, Query(json_schema_extra=PERIOD_SCHEMA)] = None,
    ) -> Response:
        if bad := bad_client_id(client_id, "query"):
            return bad
        if period is not None:
            parsed = period_or_error(period, "query")
            if isinstance(parsed, Response):
                return parsed
        return JSONResponse(
            {"invoices": await service.invoices(client_id=client_id, period=period)}
        )

    @router.get(
        "/v1/invoices/{invoice_id}",
        summary="One invoice",
        # 422 never comes from this route (a bad id is a 404); documented so the framework's
        # default entry, whose body billing never sends, is not.
        responses=responses(INVOICE_SCHEMA, 404, 422),
    )
    async def get_invoice(invoice_id: InvoiceIdPath, _: AdminCaller) -> Response:
        # Anything not shaped like an invoice id (NUL, garbage, too long) names no invoice.
        found = await service.invoice(invoice_id) if is_invoice_id(invoice_id) else None
        if found is None:
            shown = printable(invoice_id if len(invoice_id) <= 80 else invoice_id[:80] + "...")
            return JSONResponse({"detail": f"no invoice {shown}"}, status_code=404)
        return JSONResponse(found)

    _share_methods(router)
    return router
