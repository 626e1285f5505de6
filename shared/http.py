"""What every service's HTTP side shares: auth dependencies, /healthz, /metrics, and the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.auth import Caller, KeyRing, Role

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]


def add_operational_routes(
    app: FastAPI, *, registry: CollectorRegistry, health: HealthCheck
) -> None:
    @app.get("/healthz", tags=["operations"], summary="Liveness and dependency health")
    async def healthz() -> Response:
        checks = await health()
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def kafka_status(broker: KafkaBroker) -> str:
    """'ok' when the broker answers a metadata request within 3 s."""
    with contextlib.suppress(Exception):
        if await asyncio.wait_for(broker.ping(timeout=2.0), 3.0):
            return "ok"
    return "unavailable"


async def database_status(pool: asyncpg.Pool | None) -> str:
    """'ok' when PostgreSQL answers `SELECT 1` within 2 s."""
    if pool is None:
        return "unavailable"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.fetchval("SELECT 1"), 2.0)
        return "ok"
    return "unavailable"


def caller_of(request: Request, authorization: str | None) -> Caller:
    keys: KeyRing = request.app.state.keys
    caller = keys.identify(authorization)
    if caller is None:
        raise HTTPException(
            401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return caller


def require(role: Role) -> Callable[..., Caller]:
    def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Caller:
        caller = caller_of(request, authorization)
        if caller.role is not role:
            raise HTTPException(403, f"this key is not good for {request.url.path}")
        return caller

    return dependency


AdminCaller = Annotated[Caller, Depends(require(Role.ADMIN))]
IntakeCaller = Annotated[Caller, Depends(require(Role.INTAKE))]


def serve(app: FastAPI, *, host: str, port: int) -> None:
    """Run the app until SIGTERM/SIGINT; the lifespan's shutdown drains in-flight work."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
        loop="uvloop",
        http="httptools",
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; with these handlers in
    # place that re-raise is a no-op, so a clean SIGTERM stop exits 0 (a crash does not).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    uvicorn.Server(config).run()
