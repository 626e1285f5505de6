"""PostgreSQL: the pool, the schema, and retrying through a database that is briefly gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Final, Protocol, TypeVar

import asyncpg
import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Anything that runs a query: a connection (pooled or not) or the pool itself.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool

#: Failures that mean "the database is not reachable right now", worth waiting out. A failover
#: (a primary and a synchronous standby, the DSN naming both with target_session_attrs=read-write)
#: shows as several of them: connections refused or reset, "terminating connection" (the
#: primary's postmaster gone, or a fast shutdown), "the database system is starting up", no
#: host read-write yet while the standby is promoted (`TargetServerAttributeNotMatched`), a
#: write on a node that is a standby now (`ReadOnlySQLTransactionError`), and asyncpg's protocol
#: errors (`InternalClientError`) when the server's FATAL reached an idle pooled connection just
#: before the connection's end did ("cannot switch to state 15; another operation (2) is in
#: progress": seen when a query follows a SIGKILLed primary within milliseconds). A commit whose
#: acknowledgement is lost with the connection may or may not have happened: the callers' writes
#: are idempotent (metering's dedupe by (client_id, item_id), a close's deterministic invoice), so
#: running them again is right either way.
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
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory: an outage
    asyncpg.exceptions.InternalClientError,  # TargetServerAttributeNotMatched among them
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

#: Failures the data itself causes: the same statement with the same values can never succeed.
#: PostgreSQL's data exceptions (class 22: U+0000 in text, a value out of range, a bad text
#: representation), constraint violations (23) and program limits (54: a value too big to
#: index), asyncpg refusing to encode an argument (its client-side `DataError`), and Python's
#: own errors about a value (an overflow or an out-of-range date while computing a period).
#: Anything else — an outage (`TRANSIENT_ERRORS`), a missing table, a syntax error, a bug —
#: is no record's fault and must never dead-letter one.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    asyncpg.exceptions.CardinalityViolationError,
    ValueError,  # includes asyncpg's client-side DataError and UnicodeError
    ArithmeticError,  # OverflowError among them
    LookupError,
    TypeError,
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` means the database is unreachable right now (worth waiting out).

    asyncpg's client-side `DataError` ("invalid input for query argument") is an
    `InterfaceError` too, but it is the data's fault: retrying it would never end.
    """
    return isinstance(error, TRANSIENT_ERRORS) and not _client_data_error(error)


def needs_new_connections(error: BaseException) -> bool:
    """Whether `error` says a connection reached a read-only node (a standby, or a primary that
    was demoted) or is in a protocol state asyncpg cannot go on from: the pool must reconnect,
    not hand out the same connection again."""
    return isinstance(
        error,
        (asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.exceptions.InternalClientError),
    )


def caused_by_data(error: BaseException) -> bool:
    """Whether `error` is the fault of the values written (see `DATA_ERRORS`), not an outage."""
    return not is_transient(error) and isinstance(error, DATA_ERRORS)


def _client_data_error(error: BaseException) -> bool:
    return isinstance(error, asyncpg.exceptions.InterfaceError) and isinstance(error, ValueError)


_SCHEMA_LOCK = 73_011  # advisory lock key: one schema migration at a time


#: Every connection's settings. No JIT: each of Tierline's statements reads a few index ranges,
#: and a plan the planner costs high (a join over many ranges, or many clients) would otherwise
#: spend half a second compiling it: 450 ms of a 470 ms `counts_for_ranges` over 250 clients.
SESSION_SETTINGS: Final = {"jit": "off"}


async def create_pool(
    url: str,
    *,
    size: int,
    attempts: int = 60,
) -> asyncpg.Pool:
    for attempt in range(1, attempts + 1):
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=size,
                command_timeout=60,
                init=_init_connection,
                reset=_keep_session,
                server_settings=SESSION_SETTINGS,
            )
            assert pool is not None
            return pool
        except TRANSIENT_ERRORS as error:
            if attempt == attempts:
                raise
            log.warning("database not reachable, retrying", extra={"error": str(error)})
            await asyncio.sleep(min(0.25 * attempt, 2.0))
    raise AssertionError("unreachable")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection going back to the pool keeps its session as it is. asyncpg's default reset
    sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, a
    round trip of its own (0.3-0.8 ms, one of a metering batch's five round trips), to undo what
    Tierline never does on a pooled connection: its advisory locks are transaction-scoped, its
    settings `SET LOCAL`, its cursors die with their transaction, and it listens only on
    connections of its own (`on_notification`). An open transaction is still rolled back
    (asyncpg does that before this is called)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as plain Python values, encoded by orjson
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


#: How often a start retries the schema when PostgreSQL picked it as a deadlock's victim.
_SCHEMA_ATTEMPTS: Final = 5


async def apply_schema(pool: asyncpg.Pool) -> None:
    """Apply shared/ledger/schema.sql, one service at a time. Once applied it takes no table lock;
    a migration that must (the first start of a version that adds an index) can deadlock with
    writers in flight, and PostgreSQL then rolls it back: it is tried again."""
    sql = files("shared.ledger").joinpath("schema.sql").read_text()
    for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(sql)
            return
        except asyncpg.exceptions.DeadlockDetectedError:
            if attempt == _SCHEMA_ATTEMPTS:
                raise
            log.warning("the schema deadlocked with a writer; trying again (attempt %d)", attempt)
            await asyncio.sleep(0.2 * attempt)


async def ping(pool: Executor) -> None:
    """A round trip that reads nothing: raises when the database does not answer."""
    await pool.fetchval("SELECT 1")


class Reconnectable(Protocol):
    """A pool whose connections can all be replaced (asyncpg's `Pool`)."""

    async def expire_connections(self) -> None: ...


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_delay: float = 5.0,
    stop: asyncio.Event | None = None,
    pool: Reconnectable | None = None,
) -> T:
    """Run `operation` until it succeeds, backing off while the database is unreachable.

    Only transient failures are retried: anything else is a bug or bad data and is raised.
    When `operation` found itself on a standby (a read-only node) or its connection in a state
    asyncpg cannot go on from, every connection of `pool` is replaced before the next try: a new
    connection looks for the read-write node again.
    """
    delay = 0.1
    while True:
        try:
            return await operation()
        except TRANSIENT_ERRORS as error:
            if (stop is not None and stop.is_set()) or not is_transient(error):
                raise
            if pool is not None and needs_new_connections(error):
                await pool.expire_connections()
            log.warning(f"{what}: database unavailable, retrying", extra={"error": str(error)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def on_notification(
    url: str,
    channel: str,
    work: Callable[[], Awaitable[object]],
    *,
    every: float,
    what: str,
) -> None:
    """Run `work` whenever `channel` is notified (LISTEN on a connection of its own), and at
    least every `every` seconds (a notification sent while the connection was down is not
    lost for long). Runs until cancelled; a failure of `work` or of the connection is logged
    and retried, never the end of the loop."""
    wake = asyncio.Event()

    def notified(*_: object) -> None:
        wake.set()

    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(url)
            await conn.add_listener(channel, notified)
            while not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), every)
                wake.clear()
                try:
                    await work()
                except Exception as error:  # the next wake retries
                    log.warning(f"{what} failed; will retry", extra={"error": repr(error)})
        except Exception as error:
            log.warning(f"{what}: listening failed; will retry", extra={"error": repr(error)})
            await asyncio.sleep(every)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
