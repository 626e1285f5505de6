"""Which database failures are the data's fault (dead-letter the record) and which are an outage
(wait it out): `shared.infra.db.caused_by_data` and `is_transient`."""

from __future__ import annotations

import asyncpg
import pytest

from shared.infra.db import caused_by_data, is_transient, retrying

CLIENT_DATA_ERROR = asyncpg.exceptions._base.DataError  # asyncpg refusing to encode an argument


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
        asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range"),
        asyncpg.exceptions.DatetimeFieldOverflowError("date/time field value out of range"),
        asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"),
        CLIENT_DATA_ERROR("invalid input for query argument $9: 3000000000"),
        OverflowError("date value out of range"),
        ValueError("year 0 is out of range"),
    ],
)
def test_errors_the_values_cause_are_the_datas_fault(error: BaseException) -> None:
    assert caused_by_data(error)
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        # A failover: no host is read-write while the standby is promoted, and a node that is
        # a standby now refuses writes.
        asyncpg.exceptions.TargetServerAttributeNotMatched("None of the hosts match"),
        asyncpg.exceptions.ReadOnlySQLTransactionError(
            "cannot execute INSERT in a read-only transaction"
        ),
        asyncpg.exceptions.AdminShutdownError(
            "terminating connection due to unexpected postmaster exit"
        ),
        # The FATAL of a killed primary read on an idle pooled connection before its end.
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
)
def test_an_outage_is_retried_never_blamed_on_a_record(error: BaseException) -> None:
    assert is_transient(error)
    assert not caused_by_data(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UndefinedTableError('relation "metering.items" does not exist'),
        asyncpg.exceptions.PostgresSyntaxError("syntax error"),
        AssertionError(),
        AttributeError("a bug"),
    ],
)
def test_a_fault_of_the_code_or_the_schema_is_no_records_fault(error: BaseException) -> None:
    assert not caused_by_data(error)
    assert not is_transient(error)


class Pool:
    """What `retrying` asks of a pool: to replace every connection."""

    def __init__(self) -> None:
        self.expired = 0

    async def expire_connections(self) -> None:
        self.expired += 1


async def test_a_write_on_a_standby_replaces_the_pools_connections_and_is_retried() -> None:
    pool, failures = (
        Pool(),
        [
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
            asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only"),
        ],
    )

    async def write() -> str:
        if failures:
            raise failures.pop(0)
        return "committed"

    assert await retrying(write, what="write", pool=pool) == "committed"
    assert pool.expired == 1  # the read-only node's connection, not the dropped one
