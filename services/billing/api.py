"""Billing's HTTP API: agreements (§3), period close (§6), invoices (§7)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.billing.barrier import BarrierTimeout
from services.billing.service import BillingService, KafkaUnavailable
from shared.agreements import load_agreement_yaml, parse_agreement
from shared.events import CLIENT_ID_PATTERN
from shared.http import AdminCaller
from shared.periods import parse_period, period_bounds

log = logging.getLogger(__name__)
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


def _errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(problem["loc"]), "msg": str(problem["msg"]).removeprefix("Value error, ")}
        for problem in error.errors()
    ]


def unprocessable(errors: list[dict[str, Any]]) -> Response:
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors}, status_code=422)


def build_router(service: BillingService) -> APIRouter:
    router = APIRouter()

    @router.put("/v1/agreements/{client_id}", summary="Create the next version of an agreement")
    async def put_agreement(client_id: str, request: Request, _: AdminCaller) -> Response:
        raw = await request.body()
        kind = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
        try:
            if kind in ("application/yaml", "application/x-yaml", "text/yaml"):
                agreement = load_agreement_yaml(raw.decode())
            else:
                data = json.loads(raw, parse_float=Decimal)  # exact decimals
                agreement = parse_agreement(data)
        except ValueError as error:
            if isinstance(error, ValidationError):
                return unprocessable(_errors(error))
            return unprocessable([{"loc": [], "msg": f"invalid body: {error}"}])
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

    @router.get("/v1/agreements/{client_id}", summary="The current agreement of a client")
    async def get_agreement(client_id: str, _: AdminCaller) -> Response:
        agreement = await service.agreement(client_id)
        if agreement is None:
            return JSONResponse({"detail": f"no agreement for {client_id}"}, status_code=404)
        return JSONResponse(agreement.to_wire())

    @router.post("/v1/periods/{period}/close", summary="Close a period and issue its invoices")
    async def close_period(period: str, request: Request, _: AdminCaller) -> Response:
        try:
            parsed = parse_period(period)
        except ValueError as error:
            return unprocessable([{"loc": ["path", "period"], "msg": str(error)}])
        now = datetime.now(UTC)
        start, _end = period_bounds(parsed, "Pacific/Kiritimati")  # the earliest zone on Earth
        if start > now:
            return unprocessable([{"loc": ["path", "period"], "msg": "has not begun yet"}])
        client_id: str | None = None
        raw = await request.body()
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
            if client_id is not None and (
                not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id)
            ):
                return unprocessable(
                    [{"loc": ["body", "client_id"], "msg": "not a valid client id"}]
                )
        try:
            result = await service.close(parsed, client_id=client_id, now=now)
        except BarrierTimeout as error:
            return JSONResponse(
                {"detail": f"not every accepted item is metered yet; nothing closed ({error})"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse(result)

    @router.get("/v1/invoices", summary="Issued invoices, optionally by client and period")
    async def list_invoices(
        _: AdminCaller, client_id: str | None = None, period: str | None = None
    ) -> Response:
        return JSONResponse(
            {"invoices": await service.invoices(client_id=client_id or None, period=period or None)}
        )

    @router.get("/v1/invoices/{invoice_id}", summary="One invoice")
    async def get_invoice(invoice_id: str, _: AdminCaller) -> Response:
        found = await service.invoice(invoice_id)
        if found is None:
            return JSONResponse({"detail": f"no invoice {invoice_id}"}, status_code=404)
        return JSONResponse(found)

    return router
