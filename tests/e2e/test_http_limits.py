"""The limits every service's HTTP side shares, over real sockets: a stalled body is 408 after
TIERLINE_BODY_TIMEOUT_SECONDS, a declared body over the service's limit is 413 before a byte of
it is sent (once the key is known good: permission comes first), and the connection is closed
either way."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tools.supervisor import Stack

BODY_TIMEOUT = 2


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {"env": {"TIERLINE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT)}, "instances": {}}


async def exchange(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, Any], bytes]:
    """Sends `head` (and `body`, possibly short of its Content-Length), then reads the answer
    until the server closes the connection: (status, JSON body, what came after the answer)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        # The server closes the connection after its answer; a hang here fails by timeout.
        raw = await asyncio.wait_for(reader.read(), BODY_TIMEOUT + 30)
    finally:
        writer.close()
    header, _, rest = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in header.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, json.loads(rest[:length]), rest[length:]


def head(method: str, path: str, key: str, length: int, content_type: str) -> str:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )


STALLED = {
    "work-items": ("intake", "POST", "/v1/work-items", 1000, "application/json", b'[{"id": "half'),
    "agreement": ("billing", "PUT", "/v1/agreements/stalled", 500, "application/yaml",
                  b"client_id: stalled\n"),
}  # fmt: skip


@pytest.mark.parametrize("case", STALLED)
async def test_a_stalled_body_is_408_and_closed(stack: Stack, case: str) -> None:
    service, method, path, length, content_type, sent = STALLED[case]
    key = stack.intake_key if service == "intake" else stack.admin_key
    status, body, after = await exchange(
        stack.url(service), head(method, path, key, length, content_type), sent
    )
    assert status == 408
    assert f"within {BODY_TIMEOUT} s" in body["detail"]
    assert after == b""


async def test_an_agreement_declared_over_1_mib_is_413_before_its_body(stack: Stack) -> None:
    status, body, _ = await exchange(
        stack.url("billing"),
        head("PUT", "/v1/agreements/huge", stack.admin_key, 30 * 1024 * 1024, "application/yaml"),
    )
    assert status == 413
    assert "1 MiB" in body["detail"]


#: A route of each small service (64 KiB) that reads a body. Metering has none yet.
#: service -> (a route that reads a body, the service's body limit as its 413 names it).
BODY_READERS = {
    "console": ("/v1/dead-letters/workitems.completed/redrive", "64 KiB"),
    "metering": ("/v1/reclassifications", "1 MiB"),
}


@pytest.mark.parametrize("service", BODY_READERS)
async def test_a_service_refuses_a_body_over_its_limit(stack: Stack, service: str) -> None:
    path, limit = BODY_READERS[service]
    status, body, _ = await exchange(
        stack.url(service),
        head("POST", path, stack.admin_key, 2 * 1024 * 1024, "application/json"),
    )
    assert status == 413
    assert limit in body["detail"]


@pytest.mark.parametrize("service", ["metering", "console"])
async def test_a_body_no_route_reads_is_answered_unread_and_closed(
    stack: Stack, service: str
) -> None:
    """A route that answers without the body (here: there is none) never reads it: the answer
    comes, and the connection closes, with 2 MiB declared and none sent."""
    status, _, after = await exchange(
        stack.url(service),
        head("POST", "/v1/anything", stack.admin_key, 2 * 1024 * 1024, "application/json"),
    )
    assert status in (404, 405)
    assert after == b""


async def test_a_stalled_body_without_a_key_is_401_not_408(stack: Stack) -> None:
    """Permission is decided before the body is read (SPEC §13)."""
    status, _, _ = await exchange(
        stack.url("billing"),
        head("PUT", "/v1/agreements/stalled", "not-a-key", 500, "application/yaml"),
        b"client_id: stalled\n",
    )
    assert status == 401
