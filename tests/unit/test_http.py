"""shared/infra/http.py: the body guard (size limit, read deadline), the common error responses
every route documents, and admin-key rotation through the key dependencies."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.types import Message

from shared.infra.auth import KeyRing
from shared.infra.http import (
    SMALL_BODY_BYTES,
    AdminCaller,
    BodyGuard,
    add_operational_routes,
)
from shared.infra.openapi import error_responses

ADMIN_OLD = "admin-key-old-0123456789"
ADMIN_NEW = "admin-key-new-0123456789"
INTAKE = "intake-key-0123456789"


async def healthy() -> dict[str, Any]:
    return {"kafka": "ok"}


def make_app(*, max_body_bytes: int = 1024, timeout: float = 5) -> FastAPI:
    app = FastAPI()
    app.state.keys = KeyRing(admin_keys=[ADMIN_OLD, ADMIN_NEW], intake_keys={INTAKE: "jira"})

    @app.put("/v1/things/{name}")
    async def put_thing(name: str, request: Request, _: AdminCaller) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get(
        "/v1/things/{name}",
        responses=error_responses(**{"404": "No such thing", "422": "A bad name"}),
    )
    async def thing(name: str, _: AdminCaller) -> Response:
        if name == "bad":
            return JSONResponse({"detail": "name: bad is bad"}, status_code=422)
        return JSONResponse({"detail": f"no thing {name}"}, status_code=404)

    @app.get("/v1/things")
    async def things(_: AdminCaller) -> dict[str, str]:
        return {"ok": "yes"}

    add_operational_routes(
        app,
        registry=CollectorRegistry(),
        health=healthy,
        max_body_bytes=max_body_bytes,
        body_timeout_seconds=timeout,
    )
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_body_within_the_limit_reaches_the_route() -> None:
    async with client(make_app()) as http:
        response = await http.put("/v1/things/a", content=b"x" * 1024, headers=bearer(ADMIN_OLD))
    assert response.status_code == 200
    assert response.json() == {"bytes": 1024}


async def test_a_body_over_the_limit_is_413_naming_the_limit() -> None:
    async with client(make_app()) as http:
        response = await http.put("/v1/things/a", content=b"x" * 1025, headers=bearer(ADMIN_OLD))
    assert response.status_code == 413
    assert "1024 bytes (1 KiB)" in response.json()["detail"]


async def declared_too_large(method: str, key: str | None) -> tuple[list[Message], int]:
    """A request declaring a 5 MB body that never comes (reading it would hang), through the
    guard: what was sent back, and how often the body was asked for."""
    received: list[Message] = []

    async def receive() -> Message:
        received.append({})
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = BodyGuard(make_app(), max_bytes=1024, timeout_seconds=60)
    headers = [(b"content-length", b"5000000")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": "/v1/things/a",
        "query_string": b"",
        "headers": headers,
    }
    await guard(scope, receive, send)
    return sent, len(received)


async def test_a_declared_length_over_the_limit_is_413_without_reading_the_body() -> None:
    sent, reads = await declared_too_large("PUT", ADMIN_OLD)
    assert reads == 0
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("nope", 401), (INTAKE, 403)])
async def test_permission_is_decided_before_a_declared_length_over_the_limit(
    key: str | None, status: int
) -> None:
    """SPEC §13: a key that may not write is refused whatever the body, its size included."""
    sent, reads = await declared_too_large("PUT", key)
    assert reads == 0
    assert sent[0]["status"] == status
    assert (b"connection", b"close") in sent[0]["headers"], "the unread body is never read"


def stalled_after(body: bytes) -> Any:
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the sender stalls
        raise AssertionError("unreachable")

    return receive


async def guarded(scope: dict[str, Any], receive: Any, timeout: float) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = BodyGuard(make_app(), max_bytes=1024, timeout_seconds=timeout)
    await guard(
        {"type": "http", "path": "/v1/things/a", "query_string": b"", **scope}, receive, send
    )
    return sent


async def test_a_stalled_body_is_408_after_the_deadline() -> None:
    headers = [(b"authorization", f"Bearer {ADMIN_OLD}".encode())]
    sent = await guarded({"method": "PUT", "headers": headers}, stalled_after(b"x" * 10), 0.05)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"0.05 s" in sent[1]["body"]
    assert len(sent) == 2, "the route's own answer after the refusal is dropped"


async def test_permission_is_decided_before_a_stalled_body_is_read() -> None:
    sent = await guarded({"method": "PUT", "headers": []}, stalled_after(b"x"), 60)
    assert sent[0]["status"] == 401


async def test_a_chunked_body_growing_over_the_limit_is_413() -> None:
    chunks: list[Message] = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
    ]

    async def receive() -> Message:
        if chunks:
            return chunks.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    headers = [(b"authorization", f"Bearer {ADMIN_OLD}".encode())]
    sent = await guarded({"method": "PUT", "headers": headers}, receive, 60)
    assert sent[0]["status"] == 413
    assert len(sent) == 2


async def test_a_get_body_is_ignored_whatever_its_size() -> None:
    """SPEC §13: a body on a GET is ignored: never read, so neither 413 nor 422."""
    async with client(make_app(max_body_bytes=10 * SMALL_BODY_BYTES)) as http:
        for body in (b"{not json", b"x" * (SMALL_BODY_BYTES + 1)):
            response = await http.request(
                "GET", "/v1/things", content=body, headers=bearer(ADMIN_NEW)
            )
            assert response.status_code == 200
            assert response.headers["connection"] == "close"
    sent, reads = await declared_too_large("GET", ADMIN_NEW)
    assert reads == 0
    assert sent[0]["status"] == 404  # the route's own answer, not the guard's


@pytest.mark.parametrize("key", [ADMIN_OLD, ADMIN_NEW])
async def test_every_admin_key_of_the_list_is_good(key: str) -> None:
    async with client(make_app()) as http:
        assert (await http.get("/v1/things", headers=bearer(key))).status_code == 200


async def test_no_key_401_and_intake_key_403() -> None:
    async with client(make_app()) as http:
        assert (await http.get("/v1/things")).status_code == 401
        assert (await http.get("/v1/things", headers=bearer("nope"))).status_code == 401
        assert (await http.get("/v1/things", headers=bearer(INTAKE))).status_code == 403


async def test_every_operation_documents_the_shared_answers() -> None:
    async with client(make_app()) as http:
        schema = (await http.get("/openapi.json")).json()
    put = schema["paths"]["/v1/things/{name}"]["put"]
    assert {"401", "403", "408", "413", "422"} <= set(put["responses"])
    assert put["security"], "the bearer key is documented"
    health = schema["paths"]["/healthz"]["get"]
    assert {"408", "413", "503"} <= set(health["responses"])
    assert "401" not in health["responses"]
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


async def test_error_responses_document_a_route_s_own_answers() -> None:
    async with client(make_app()) as http:
        schema = (await http.get("/openapi.json")).json()
    responses = schema["paths"]["/v1/things/{name}"]["get"]["responses"]
    assert responses["404"]["content"]["application/json"]["schema"]["required"] == ["detail"]
    detail = responses["422"]["content"]["application/json"]["schema"]["properties"]["detail"]
    assert [kind["type"] for kind in detail["anyOf"]] == ["string", "array"]
