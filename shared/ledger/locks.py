"""The close lock of the usage ledger (shared/ledger/README.md): metering's writers hold it shared
for the clients of their batch, billing's close holds it exclusive for the client it closes. Both
are functions of schema.sql, so the lock's key space is written once."""

from __future__ import annotations

from typing import Final

from shared.infra.db import Connection

#: Metering: take the close lock shared for each client of the batch, then read which of their
#: periods are closed; one round trip, first in the counting transaction. Argument: text[].
LOCK_AND_READ_CLOSED: Final = (
    "SELECT client_id, period FROM metering.lock_and_read_closed($1::text[])"
)


async def lock_for_close(conn: Connection, client_id: str) -> None:
    """Billing, first in a close's transaction: the client's close lock, exclusive, until the
    transaction ends (waits for that client's metering writers in flight; holds new ones)."""
    await conn.execute("SELECT metering.lock_for_close($1)", client_id)


async def lock_for_reclassification(conn: Connection, client_id: str) -> None:
    """Metering, first in a reclassification's transaction: one reclassification of the client
    at a time. Then the close lock, shared (`LOCK_AND_READ_CLOSED`), as any writer takes it."""
    await conn.execute("SELECT metering.lock_for_reclassification($1)", client_id)
