"""The services' connection pool (`shared.infra.db.create_pool`) on a real PostgreSQL: a released
connection goes back as it is, without asyncpg's reset round trip, yet never inside a
transaction."""

from __future__ import annotations

import asyncpg

from shared.infra.db import create_pool
from tests.databases import private_database


async def test_a_released_connection_keeps_its_session_and_sends_no_reset(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'kept-by-the-pool'")
            queries_before_release = conn._con._protocol.queries_count  # type: ignore[attr-defined]
            raw = conn._con  # type: ignore[attr-defined]
        # asyncpg's default reset would have sent one more query, ending in RESET ALL.
        assert raw._protocol.queries_count == queries_before_release
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session
            assert await conn.fetchval("SHOW application_name") == "kept-by-the-pool"
    finally:
        await pool.close()


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back(
    database_url: str,
) -> None:
    async with private_database(database_url, "pool_release") as url:
        pool = await create_pool(url, size=1)
        try:
            await pool.execute("CREATE TABLE scratch (n int)")
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO scratch VALUES (1)")
            async with pool.acquire() as conn:
                assert not conn.is_in_transaction()
                assert await conn.fetchval("SELECT count(*) FROM scratch") == 0
        finally:
            await pool.close()


async def test_the_test_itself_sees_what_a_reset_would_have_done(database_url: str) -> None:
    """The control: asyncpg's own reset undoes the session setting the pool above keeps, so
    the first test could not pass by accident."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept-by-the-pool'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "kept-by-the-pool"
    finally:
        await pool.close()
