"""What every service's HTTP side shares: the app's construction (`service_app`), typed state for
dependencies (`set_state`, `state_of`), auth dependencies, /healthz, /metrics, the body guard
(size limit and read deadline), the error responses every route documents, and the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Annotated, Any, Final, Protocol, TypeVar

import asyncpg
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.infra.auth import Caller, KeyRing, Role
from shared.infra.db import ping
from shared.infra.heap import settle_heap
from shared.infra.logs import configure_logging
from shared.infra.openapi import install_openapi_common_responses
from shared.infra.settings import CommonSettings, HttpSettings, load_settings

log = logging.getLogger(__name__)

#: What /healthz reports: each dependency ("kafka", "database") → "ok" or "unavailable".
HealthCheck = Callable[[], Awaitable[Mapping[str, str]]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
T = TypeVar("T")

KIB: Final = 1024
MIB: Final = 1024 * KIB
#: The body limit of a service that takes no large bodies (metering, classifier, console).
SMALL_BODY_BYTES: Final = 64 * KIB
#: SPEC §13: a body over 1 MiB is 413 (billing's agreements and reclassifications).
DEFAULT_BODY_BYTES: Final = 1 * MIB
#: Methods whose body, if any, is ignored (SPEC §13): never more than SMALL_BODY_BYTES is read.
_BODILESS_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def _size(limit: int) -> str:
    if limit % MIB == 0:
        return f"{limit // MIB} MiB"
    return f"{limit // KIB} KiB" if limit % KIB == 0 else f"{limit} bytes"


class BodyGuard:
    """Pure ASGI middleware: each request's body within a size limit and a deadline.

    The guard never answers before the route has decided permission (SPEC §13: a client key on
    a write is 403 whatever the body): the body is read only when the route asks for it. Then a
    `Content-Length` over the limit is 413 at once, without reading a byte; a body that grows
    over the limit is 413 as soon as it does; and one not complete within the deadline from the
    request's start (a stalled or trickling sender) is 408. Each closes the connection; the
    route then sees the client gone and whatever it answers is dropped. A route that answers
    without reading a declared body (a refusal, a GET: its body is ignored) closes the
    connection too, so the unread rest is never read."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    def limit_for(self, method: str) -> int:
        if method in _BODILESS_METHODS:
            return min(self.max_bytes, SMALL_BODY_BYTES)
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"])
        declared = _header(scope, b"content-length")
        declared_too_large = declared is not None and declared.isdigit() and int(declared) > limit
        has_body = bool(declared and declared != "0") or bool(_header(scope, b"transfer-encoding"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_seconds
        received = 0
        body_done = False
        refused = False
        response_started = False

        async def refuse(status: int, detail: str) -> Message:
            nonlocal refused
            if not response_started:
                await _refuse(send, status, detail)
            refused = True
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done or response_started:
                # After the body, or once the route has answered (a response waiting for the
                # disconnect), a receive is not the route reading a body: no limit, no deadline.
                return await receive()
            if declared_too_large:  # the route asks for a body it cannot have: not a byte read
                return await refuse(413, _too_large(limit))
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await refuse(
                    408, f"the request body was not complete within {self.timeout_seconds:g} s"
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return await refuse(413, _too_large(limit))
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # we answered already
            if message["type"] == "http.response.start":
                response_started = True
                if has_body and not body_done:  # answered without the body: never read it
                    message = _closing(message)
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The route failed on the body it was refused (ClientDisconnect): answered already.
            log.debug("request refused while the route read its body", exc_info=True)


_CLOSE: Final = (b"connection", b"close")


def _closing(start: Message) -> Message:
    """A response start that closes the connection after the answer."""
    headers = [(n, v) for n, v in start.get("headers", []) if bytes(n).lower() != b"connection"]
    return {**start, "headers": [*headers, _CLOSE]}


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes ({_size(limit)})"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                _CLOSE,  # the unread rest of the body is not read
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def invalid_parameter(location: str, name: str, message: str) -> JSONResponse:
    """A 422 for one bad path or query parameter, in the shape FastAPI's own validation errors
    have (and every route documents): `{"detail": [{"loc", "msg", "type"}]}`."""
    return JSONResponse(
        {"detail": [{"loc": [location, name], "msg": f"{name}: {message}", "type": "value_error"}]},
        status_code=422,
    )


def add_operational_routes(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    health: HealthCheck,
    max_body_bytes: int = DEFAULT_BODY_BYTES,
    body_timeout_seconds: float | None = None,
) -> None:
    """/healthz and /metrics, the body guard (`max_body_bytes`; bodies of GET and the like are
    held to SMALL_BODY_BYTES) and the common error responses in the OpenAPI document.

    `body_timeout_seconds` defaults to TIERLINE_BODY_TIMEOUT_SECONDS, which every service's
    settings validate at start."""
    timeout = (
        body_timeout_seconds
        if body_timeout_seconds is not None
        else HttpSettings().tierline_body_timeout_seconds
    )
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes, timeout_seconds=timeout)
    install_openapi_common_responses(app)

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness and dependency health",
        responses={503: {"description": "A dependency (Kafka, PostgreSQL) is unavailable"}},
    )
    async def healthz() -> Response:
        checks = await health()
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class Startable(Protocol):
    """Something a service runs: a broker, a producer, a view of a compacted topic."""

    async def start(self) -> object: ...

    async def stop(self) -> object: ...


async def start_in(running: AsyncExitStack, *things: Startable) -> None:
    """Starts `things` in order, each to be stopped when `running` closes (in reverse order)."""
    for thing in things:
        await thing.start()
        running.push_async_callback(thing.stop)


def run_in(running: AsyncExitStack, work: Coroutine[Any, Any, None], *, name: str) -> None:
    """Runs `work` as a background task, cancelled (and awaited) when `running` closes."""
    task = asyncio.create_task(work, name=name)
    running.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


#: What a service starts in its lifespan: it pushes each stop onto the stack as it goes.
Starter = Callable[[FastAPI, AsyncExitStack], Awaitable[None]]


def lifespan_of(service: str, start: Starter, *, log: logging.Logger) -> Lifespan:
    """A service's lifespan: `start` starts what the service runs, pushing what undoes each
    step onto the stack; at shutdown (or when a later step fails to start) they are undone in
    reverse order. "ready" and "stopped" are logged with their status."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as running:
            await start(app, running)
            log.info(f"{service} ready", extra={"status": "ready"})
            try:
                yield
            finally:
                await running.aclose()
                log.info(f"{service} stopped", extra={"status": "stopped"})

    return lifespan


def service_app(
    service: str,
    *,
    description: str,
    start: Starter,
    log: logging.Logger,
    registry: CollectorRegistry,
    health: HealthCheck,
    keys: KeyRing | None = None,
    routers: Sequence[APIRouter] = (),
    max_body_bytes: int = DEFAULT_BODY_BYTES,
    body_timeout_seconds: float | None = None,
) -> FastAPI:
    """The app of `service` ("Tierline <service>"): its lifespan (`lifespan_of(start)`), its
    routers (module-level, so the OpenAPI document is whole before the lifespan starts), its
    keys, and the operational routes and body guard every service has."""
    app = FastAPI(
        title=f"Tierline {service}",
        version="1",
        description=description,
        lifespan=lifespan_of(service, start, log=log),
    )
    if keys is not None:
        app.state.keys = keys
    for router in routers:
        app.include_router(router)
    add_operational_routes(
        app,
        registry=registry,
        health=health,
        max_body_bytes=max_body_bytes,
        body_timeout_seconds=body_timeout_seconds,
    )
    return app


def _state_key(kind: type[Any]) -> str:
    return f"typed:{kind.__module__}.{kind.__qualname__}"


def set_state(app: FastAPI, value: object) -> None:
    """Keeps `value` on the app under its type, for `state_of(type(value))` and `get_state`:
    set at construction, or in the lifespan for what only exists once started (a pool)."""
    setattr(app.state, _state_key(type(value)), value)


def get_state(app: FastAPI, kind: type[T]) -> T | None:
    """The app's `kind` object, or None while nothing has set it."""
    value = getattr(app.state, _state_key(kind), None)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"app state for {kind.__name__} holds a {type(value).__name__}")
    return value


def state_of(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency giving the app's `kind` object (`set_state`): use it as
    `Annotated[Kind, Depends(state_of(Kind))]`. A 503 while the lifespan has not set it.
    It is `async def` only so that FastAPI calls it on the loop, not in its thread pool."""

    async def dependency(request: Request) -> T:
        value = get_state(request.app, kind)
        if value is None:
            raise HTTPException(503, "the service is starting; retry", headers={"Retry-After": "1"})
        return value

    dependency.__name__ = f"state_of_{kind.__name__}"
    return dependency


def health_of(
    *, broker: KafkaBroker, pool: Callable[[], asyncpg.Pool | None] | None = None
) -> HealthCheck:
    """The /healthz check of a service on Kafka, and on PostgreSQL when `pool` gives its pool
    (None until the lifespan has made one)."""

    async def health() -> dict[str, str]:
        checks = {"kafka": await kafka_status(broker)}
        if pool is not None:
            checks["database"] = await database_status(pool())
        return checks

    return health


async def kafka_status(broker: KafkaBroker) -> str:
    """'ok' when the broker answers a metadata request within 3 s."""
    with contextlib.suppress(Exception):
        if await asyncio.wait_for(broker.ping(timeout=2.0), 3.0):
            return "ok"
    return "unavailable"


async def database_status(pool: asyncpg.Pool | None) -> str:
    """'ok' when PostgreSQL answers a ping within 2 s."""
    if pool is None:
        return "unavailable"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ping(pool), 2.0)
        return "ok"
    return "unavailable"


#: Documents bearer auth in every protected operation; the key itself is checked by KeyRing.
_BEARER: Final = HTTPBearer(
    auto_error=False,
    description="An admin key; an intake key (posting work items only); or a client key "
    "(reading that client's own documents only)",
)


def caller_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    keys: KeyRing = request.app.state.keys
    caller = keys.identify(f"Bearer {credentials.credentials}" if credentials is not None else None)
    if caller is None:
        raise HTTPException(
            401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return caller


def require(role: Role) -> Callable[..., Awaitable[Caller]]:
    """The dependency that lets only keys of `role` through (401 without a known key, 403
    with another). Like every key dependency it is `async def`: no hop to the thread pool."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    ) -> Caller:
        caller = caller_of(request, credentials)
        if caller.role is not role:
            raise HTTPException(403, f"this key is not good for {request.url.path}")
        return caller

    dependency.__name__ = f"require_{role.value}"
    return dependency


#: The permission of every write but posting work items (SPEC §2: admin keys only). As a
#: route's `dependencies=[Depends(require_admin)]` it is decided before any input is checked
#: and before the body is read (SPEC §13).
require_admin: Final = require(Role.ADMIN)
#: The permission of `POST /v1/work-items`: intake keys only.
require_intake: Final = require(Role.INTAKE)


async def require_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
) -> Caller:
    """An admin key, or a client key (SPEC §2: it reads its own client's documents).

    For a client key, a `client_id` in the path or the query that names any other client,
    existing or not, well-formed or not, is 403 here (SPEC §13), before the route checks its
    inputs: every reader route names its client as `client_id`. A route then takes the client
    to read from `scoped_client` (its own when a filter is left out), and answers a document
    found by id only when `may_read` it."""
    caller = caller_of(request, credentials)
    if caller.role not in (Role.ADMIN, Role.CLIENT):
        raise HTTPException(403, f"this key is not good for {request.url.path}")
    if caller.role is Role.CLIENT:
        named = [request.path_params.get("client_id"), *request.query_params.getlist("client_id")]
        if any(name is not None and name != caller.client_id for name in named):
            raise HTTPException(403, _OWN_CLIENT_ONLY)
    return caller


_OWN_CLIENT_ONLY: Final = "this key reads only its own client's documents"


def scoped_client(caller: Caller, client_id: str | None) -> str | None:
    """The client a read may see (SPEC §13 "Keys"): for an admin key, `client_id` as given (None:
    every client); for a client key, its own client — also when `client_id` is left out — and a
    403 when `client_id` names any other, existing or not."""
    if caller.role is not Role.CLIENT:
        return client_id
    if client_id is not None and client_id != caller.client_id:
        raise HTTPException(403, _OWN_CLIENT_ONLY)
    return caller.client_id


def may_read(caller: Caller, client_id: str) -> bool:
    """Whether `caller` may see a document of `client_id` found by its id: a client key sees
    only its own client's; a route answers another client's as unknown (404, SPEC §2)."""
    return caller.role is not Role.CLIENT or caller.client_id == client_id


AdminCaller = Annotated[Caller, Depends(require_admin)]
IntakeCaller = Annotated[Caller, Depends(require_intake)]
#: An admin key or a client key; a route scopes what it reads with `scoped_client`.
ReaderCaller = Annotated[Caller, Depends(require_reader)]
#: A route's `dependencies=`: the access rule it declares first, so it is decided first.
ADMIN_ONLY: Final = (Depends(require_admin),)
READERS: Final = (Depends(require_reader),)


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


S = TypeVar("S", bound=CommonSettings)


def run_service(
    name: str,
    settings_type: type[S],
    create_app: Callable[[S], FastAPI],
    *,
    port: Callable[[S], int],
) -> None:
    """Every service's entry point: its settings from the environment (a bad value stops it,
    naming the variable), JSON logs, then the app served until SIGTERM."""
    settings = load_settings(settings_type)
    configure_logging(name, level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    app.router.lifespan_context = _settling_once_started(app.router.lifespan_context)
    serve(app, host=settings.tierline_http_host, port=port(settings))


def _settling_once_started(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
) -> Lifespan:
    """`lifespan`, then `settle_heap` once it has started: what start-up built (the agreements
    read, the clients connected) is kept for the process's life and is never collected."""

    @contextlib.asynccontextmanager
    async def settling(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            settle_heap()
            yield

    return settling
