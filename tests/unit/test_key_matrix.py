"""The key matrix in process (SPEC §2, §13; OWASP API1): every route of every service app, as its
`create_app` builds it, has an access rule in tests/access.py and keeps it — no key or an unknown
key is 401, the intake key is 403 but on posting work items, a client key is 403 on every write
whatever the body and on another client's path or filter, each admin key of a rotation is good.

Nothing is started: the routes that pass the key answer 503 (the lifespan has not run), which is
what "allowed" means here. tests/e2e/test_key_matrix.py runs the same matrix on the running
system with data (another client's invoice is 404, a list holds the key's own documents only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from shared.infra.auth import KeyRing, KeySettings
from shared.infra.http import AdminCaller, ReaderCaller
from tests.access import (
    RULES,
    SERVICES,
    Access,
    Answer,
    Body,
    DeclaredOnly,
    KeySet,
    every_route,
    key_matrix,
    service_apps,
    stale,
    unruled,
)

KEYS = KeySet(
    admin=("admin-key-old-0123456789", "admin-key-new-0123456789"),
    intake="intake-key-0123456789",
    clients={"acme": "client-key-acme-0123", "globex": "client-key-globex-01"},
)
PERIOD = "2026-10"


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    return service_apps(KEYS)


def parsed(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def declared_only(
    app: FastAPI, method: str, target: str, key: str | None, length: int
) -> Answer:
    """The request declares `length` bytes of body and sends none: an answer at all shows the
    route decided without reading it (a read would be answered 413 by the body guard)."""
    path, _, query = target.partition("?")
    headers = [(b"content-length", str(length).encode()), (b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    done = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        await done.wait()  # the body never comes; after the answer, the client is gone
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return Answer(int(sent[0]["status"]))


def in_process(apps: Mapping[str, FastAPI]) -> Any:
    async def send(
        service: str, method: str, target: str, key: str | None, body: Body = None
    ) -> Answer:
        app = apps[service]
        if isinstance(body, DeclaredOnly):
            return await declared_only(app, method, target, key, body.length)
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.request(method, target, headers=headers, content=body)
        return Answer(response.status_code, parsed(response))

    return send


def test_every_service_app_is_walked(apps: dict[str, FastAPI]) -> None:
    assert tuple(apps) == SERVICES
    served = every_route(apps)
    assert ("billing", "GET", "/v1/invoices/{invoice_id}") in served
    assert ("console", "GET", "/static/{file}") in served  # mounts too


def test_every_route_of_every_service_has_an_access_rule(apps: dict[str, FastAPI]) -> None:
    missing = unruled(apps)
    assert not missing, "give each route its line in tests/access.py RULES: " + ", ".join(
        " ".join(route) for route in missing
    )
    assert not stale(apps), "rules naming no route"


def test_a_route_added_without_a_rule_is_caught() -> None:
    apps = service_apps(KEYS)

    @apps["billing"].get("/v1/secrets/{client_id}")
    async def secrets(client_id: str, _: ReaderCaller) -> dict[str, str]:
        return {"client_id": client_id}

    assert unruled(apps) == [("billing", "GET", "/v1/secrets/{client_id}")]


async def test_every_route_keeps_its_rule_for_every_key(apps: dict[str, FastAPI]) -> None:
    problems = await key_matrix(
        in_process(apps),
        every_route(apps),
        KEYS,
        own="acme",
        other="globex",
        period=PERIOD,
        with_data=False,
    )
    assert not problems, "\n".join(problems)


def leaky_app() -> FastAPI:
    """Routes that check the key but not the client, or no key at all: what broken
    object-level authorization looks like, for the matrix to catch."""
    app = FastAPI()
    app.state.keys = KeyRing.from_settings(KeySettings(**KEYS.settings()))

    @app.get("/v1/agreements/{client_id}")
    async def agreement(client_id: str, _: AdminCaller) -> dict[str, str]:
        return {"client_id": client_id}

    @app.get("/v1/usage/{client_id}")
    async def usage(client_id: str) -> dict[str, str]:
        return {"client_id": client_id}

    return app


async def test_the_matrix_catches_a_route_that_breaks_its_rule() -> None:
    """A client key refused where its rule lets it read, and a read any key may make of any
    client: both are reported."""
    app = leaky_app()
    rules = {
        ("billing", "GET", "/v1/agreements/{client_id}"): Access.OWN_CLIENT,
        ("billing", "GET", "/v1/usage/{client_id}"): Access.OWN_CLIENT,
    }
    problems = await key_matrix(
        in_process({"billing": app}),
        list(rules),
        KEYS,
        own="acme",
        other="globex",
        period=PERIOD,
        with_data=False,
        rules=rules,
    )
    assert any("/v1/agreements/{client_id} with the client key of acme: 403" in p for p in problems)
    assert any("/v1/usage/{client_id} with no key: 200, wanted 401" in p for p in problems)
    assert any("/v1/usage/{client_id} naming 'globex'" in p for p in problems)


def test_every_rule_names_a_service() -> None:
    assert {service for service, _, _ in RULES} <= set(SERVICES)
