"""What billing's routes depend on, as typed FastAPI dependencies.

- `Billing`: the running service and its pool, set on the app (`set_state`) by the lifespan;
  routes take `Service`, `Database` and `Now` (tests override `billing_service`, `database` and
  `clock` through `app.dependency_overrides`).
- Checked inputs: `PathClientId`, `QueryClientId`, `PathPeriod`, `QueryPeriod`, a bounded body
  (`BoundedBody`) and the client's `CurrentAgreement`. A bad one raises `Refusal`, whose
  response (`{"detail", "errors"}` for a 422, 404, 413) `BillingRoute` sends.

Dependencies run in the order a route declares them, after the key it requires
(`dependencies=ADMIN_ONLY` or `READERS`, so permission is decided before any input is checked or
the body read): a route declares them in the order it checks its inputs. All are `async def`,
so none hops to the thread pool and a body is parsed where it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.types import Receive, Scope, Send

from services.billing import store
from services.billing.openapi import (
    CLIENT_ID_SCHEMA,
    PERIOD_SCHEMA,
    bad_client_id,
    period_or_error,
    printable,
    unprocessable,
)
from services.billing.service import BillingService, utcnow
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import MAX_BODY_BYTES
from shared.domain.periods import Period
from shared.infra.db import Executor
from shared.infra.http import state_of


@dataclass(frozen=True)
class Billing:
    """What the lifespan starts and the routes use."""

    service: BillingService
    pool: asyncpg.Pool


billing = state_of(Billing)


async def billing_service(running: Annotated[Billing, Depends(billing)]) -> BillingService:
    return running.service


async def database(running: Annotated[Billing, Depends(billing)]) -> Executor:
    return running.pool


Service = Annotated[BillingService, Depends(billing_service)]
Database = Annotated[Executor, Depends(database)]


async def clock() -> datetime:
    """Now (UTC); tests pin it through `app.dependency_overrides[clock]`."""
    return utcnow()


Now = Annotated[datetime, Depends(clock)]


# --- refusals -----------------------------------------------------------------------------------


class Refusal(Exception):
    """An input the route will not serve, with the answer to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def invalid(loc: list[str | int], msg: str) -> Refusal:
    """A 422 naming where (`["path", "period"]`) and why."""
    return Refusal(unprocessable([{"loc": loc, "msg": msg}]))


def not_found(detail: str) -> Refusal:
    return Refusal(JSONResponse({"detail": detail}, status_code=404))


def unknown(what: str, ident: str) -> Refusal:
    """The 404 of a document by id (`no invoice <id>`), the id echoed safely and at most 80
    characters of it."""
    return not_found(f"no {what} {printable(ident if len(ident) <= 80 else ident[:80] + '...')}")


class BillingRoute(APIRoute):
    """Sends the response of a `Refusal`; and a 405 names every method of its path in `Allow`.

    Starlette answers 405 from the first route whose path matches and names only that route's
    methods; GET and PUT of /v1/agreements/{client_id} are two routes (`share_methods`)."""

    path_methods: frozenset[str] = frozenset()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods and self.path_methods:
            allow = ", ".join(sorted(self.path_methods))
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": allow})
        try:
            await super().handle(scope, receive, send)
        except Refusal as refusal:
            await refusal.response(scope, receive, send)


def share_methods(router: APIRouter) -> None:
    by_path: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, BillingRoute):
            by_path.setdefault(route.path, set()).update(route.methods or ())
    for route in router.routes:
        if isinstance(route, BillingRoute):
            route.path_methods = frozenset(by_path[route.path])


# --- checked inputs -----------------------------------------------------------------------------


def _checked_client_id(value: str | None, where: str) -> str | None:
    if bad := bad_client_id(value, where):
        raise Refusal(bad)
    return value


async def path_client_id(
    client_id: Annotated[str, Path(json_schema_extra=CLIENT_ID_SCHEMA)],
) -> str:
    _checked_client_id(client_id, "path")
    return client_id


async def query_client_id(
    client_id: Annotated[str | None, Query(json_schema_extra=CLIENT_ID_SCHEMA)] = None,
) -> str | None:
    return _checked_client_id(client_id, "query")


def _checked_period(value: str, where: str) -> Period:
    parsed = period_or_error(value, where)
    if isinstance(parsed, Response):
        raise Refusal(parsed)
    return parsed


async def path_period(period: Annotated[str, Path(json_schema_extra=PERIOD_SCHEMA)]) -> Period:
    return _checked_period(period, "path")


async def query_period(
    period: Annotated[str | None, Query(json_schema_extra=PERIOD_SCHEMA)] = None,
) -> Period | None:
    return None if period is None else _checked_period(period, "query")


PathClientId = Annotated[str, Depends(path_client_id)]
QueryClientId = Annotated[str | None, Depends(query_client_id)]
PathPeriod = Annotated[Period, Depends(path_period)]
QueryPeriod = Annotated[Period | None, Depends(query_period)]


async def current_agreement(client_id: PathClientId, db: Database) -> Agreement:
    """The client's current agreement; 404 when it has none."""
    agreement = await store.current_agreement(db, client_id)
    if agreement is None:
        raise not_found(f"no agreement for {client_id}")
    return agreement


CurrentAgreement = Annotated[Agreement, Depends(current_agreement)]


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


class BoundedBody:
    """The request body, at most MAX_BODY_BYTES; 413 naming `what` beyond that."""

    def __init__(self, what: str) -> None:
        self.what = what

    async def __call__(self, request: Request) -> bytes:
        raw = await read_bounded(request)
        if raw is None:
            limit = f"{MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES // 2**20} MiB)"
            raise Refusal(too_large(f"{self.what} holds at most {limit}"))
        return raw


def too_large(message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=413)
