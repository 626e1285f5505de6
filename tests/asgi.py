"""An HTTP client on an app in-process (no server, no lifespan): how the API tests talk to a
router wired to a real or fake store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI


@contextlib.asynccontextmanager
async def asgi_client(
    app: FastAPI, key: str, *, base_url: str = "http://test", timeout: float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose every request carries `key` as its bearer token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
    ) as http:
        yield http
