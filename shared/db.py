"""PostgreSQL: the pool, the schema, and retrying through a database that is briefly gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import TypeVar

import asyncpg
import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Anything that runs a query: a connection (pooled or not) or the pool itself.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool

#: Failures that mean "the database is not reachable right now", worth waiting out.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.InterfaceError,
)

_SCHEMA_LOCK = 73_011  # advisory lock key: one schema migration at a time


async def create_pool(
    url: str,
    *,
    size: int,
    attempts: int = 60,
) -> asyncpg.Pool:
    for attempt in range(1, attempts + 1):
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=size, command_timeout=60, init=_init_connection
            )
            assert pool is not None
            return pool
        except TRANSIENT_ERRORS as error:
            if attempt == attempts:
                raise
            log.warning("database not reachable, retrying", extra={"error": str(error)})
            await asyncio.sleep(min(0.25 * attempt, 2.0))
    raise AssertionError("unreachable")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as plain Python values, encoded by orjson
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def apply_schema(pool: asyncpg.Pool) -> None:
    sql = files("shared").joinpath("schema.sql").read_text()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(sql)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_delay: float = 5.0,
    stop: asyncio.Event | None = None,
) -> T:
    """Run `operation` until it succeeds, backing off while the database is unreachable.

    Only transient failures are retried: anything else is a bug or bad data and is raised.
    """
    delay = 0.1
    while True:
        try:
            return await operation()
        except TRANSIENT_ERRORS as error:
            if stop is not None and stop.is_set():
                raise
            log.warning(f"{what}: database unavailable, retrying", extra={"error": str(error)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
