"""A private database on the session's PostgreSQL, for a test that needs a ledger of its own: a
schema from before to migrate, or statistics no other test's rows disturb."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg


@asynccontextmanager
async def private_database(database_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database `<prefix>_<random>` on `database_url`'s server; its URL. Dropped
    on the way out, after the caller has closed its connections to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f"DROP DATABASE {name}")
    finally:
        await admin.close()
