"""Billing's SQL, in one place: agreement versions, closed periods and issued invoices."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import ValidationError

from services.billing.close_decision import Close, ClosedPeriod
from services.billing.insight import Billed
from shared.contracts.invoice import Invoice, Unbilled
from shared.domain.agreement.agreement import Agreement
from shared.infra.db import Connection, Executor

log = logging.getLogger(__name__)


def _agreement(body: Any) -> Agreement | None:
    """A stored agreement, or None if it is not valid under today's rules (a version stored
    before SPEC §13's bounds, say): one such row must not stop billing for anyone."""
    try:
        return Agreement.model_validate(body)
    except (ValidationError, ValueError) as error:
        client = body.get("client_id") if isinstance(body, dict) else None
        version = body.get("version") if isinstance(body, dict) else None
        log.error(
            f"stored agreement {client!r} v{version} is not valid; it is skipped",
            extra={"error": str(error)[:500]},
        )
        return None


# --- agreements -------------------------------------------------------------------------------


async def store_agreement(conn: Connection, agreement: Agreement) -> Agreement:
    """Store `agreement` as the client's next version (1, 2, …) and return it with that version."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('agreement:' || $1))", agreement.client_id
        )
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM billing.agreements WHERE client_id = $1",
            agreement.client_id,
        )
        stored = agreement.model_copy(update={"version": version})
        await conn.execute(
            "INSERT INTO billing.agreements (client_id, version, body) VALUES ($1, $2, $3)",
            stored.client_id,
            version,
            stored.to_wire(),
        )
    return stored


async def mark_agreement_published(conn: Executor, client_id: str, version: int) -> None:
    """`version` is on the compacted topic: it and every earlier version (superseded, so never
    to be published after it) are done."""
    await conn.execute(
        """UPDATE billing.agreements SET published = true
            WHERE client_id = $1 AND version <= $2 AND NOT published""",
        client_id,
        version,
    )


async def unpublished_agreements(conn: Executor) -> list[tuple[str, int, Agreement | None]]:
    """Per client with an unpublished version, its latest one (client_id, version, agreement;
    None if that stored body is no longer valid), by client."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (client_id) client_id, version, body FROM billing.agreements
            WHERE NOT published ORDER BY client_id, version DESC"""
    )
    return [(r["client_id"], r["version"], _agreement(r["body"])) for r in rows]


async def current_agreement(conn: Executor, client_id: str) -> Agreement | None:
    """The client's latest valid version (a stored version no longer valid is skipped)."""
    body = await conn.fetchval(
        "SELECT body FROM billing.agreements WHERE client_id = $1 ORDER BY version DESC LIMIT 1",
        client_id,
    )
    if body is None:
        return None
    return _agreement(body) or await _latest_valid(conn, client_id)


async def current_agreements(conn: Executor) -> dict[str, Agreement]:
    rows = await conn.fetch(
        """SELECT DISTINCT ON (client_id) client_id, body FROM billing.agreements
            ORDER BY client_id, version DESC"""
    )
    current: dict[str, Agreement] = {}
    for row in rows:
        agreement = _agreement(row["body"]) or await _latest_valid(conn, row["client_id"])
        if agreement is not None:
            current[row["client_id"]] = agreement
    return current


async def _latest_valid(conn: Executor, client_id: str) -> Agreement | None:
    """The rare path: the latest version is invalid; the one before it that is valid, if any
    (the version the other services still hold, since the invalid one was never published)."""
    rows = await conn.fetch(
        "SELECT body FROM billing.agreements WHERE client_id = $1 ORDER BY version DESC OFFSET 1",
        client_id,
    )
    for row in rows:
        agreement = _agreement(row["body"])
        if agreement is not None:
            return agreement
    return None


async def first_agreement_at(conn: Executor, client_id: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT min(created_at) FROM billing.agreements WHERE client_id = $1", client_id
    )
    return value


# --- closed periods and invoices --------------------------------------------------------------


async def closed_periods_for_close(conn: Connection, client_id: str) -> dict[str, ClosedPeriod]:
    """Every period closed for the client, by period (a row a month: small whatever the usage)."""
    rows = await conn.fetch(
        """SELECT period, invoice_id, items, billed_total, late_items_settled, credits
             FROM billing.closed_periods WHERE client_id = $1""",
        client_id,
    )
    return {r["period"]: _closed_period(r) for r in rows}


def _closed_period(row: asyncpg.Record | Mapping[str, Any]) -> ClosedPeriod:
    """A closed_periods row, as a record or as `lock_and_read_for_close`'s JSON (text numerics)."""
    return ClosedPeriod(
        row["period"],
        row["invoice_id"],
        int(row["items"]),
        None if row["billed_total"] is None else Decimal(row["billed_total"]),
        int(row["late_items_settled"]),
        Decimal(row["credits"]),
    )


@dataclass(frozen=True)
class CloseStart:
    """What a close reads first, under the client's close lock."""

    notes_owed: bool
    closed: dict[str, ClosedPeriod]
    agreement: Agreement | None


async def lock_and_read_for_close(conn: Connection, client_id: str) -> CloseStart:
    """First in a close's transaction, one round trip: the client's close lock, exclusive (it
    waits for that client's metering writers in flight and holds new ones until the transaction
    ends), then whether notes are owed, the closed periods and the current agreement."""
    row = await conn.fetchrow("SELECT * FROM billing.lock_and_read_for_close($1)", client_id)
    assert row is not None  # the function returns one row
    body = row["agreement"]
    agreement = None if body is None else _agreement(body) or await _latest_valid(conn, client_id)
    closed = {c["period"]: _closed_period(c) for c in row["closed"]}
    return CloseStart(bool(row["notes_owed"]), closed, agreement)


#: One statement: the closed period, the earlier periods it re-rated and its invoice (if any).
_RECORD_CLOSE = """
WITH closed AS (
    INSERT INTO billing.closed_periods (client_id, period, invoice_id, agreement_version,
                                        tier_name, tier_reason, items, billed_total,
                                        late_items_settled, credits)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $15)
), rerated AS (
    UPDATE billing.closed_periods c
       SET billed_total = r.billed_total, late_items_settled = r.late_items_settled,
           credits = r.credits
      FROM unnest($10::text[], $11::numeric[], $12::bigint[], $16::numeric[])
           AS r(period, billed_total, late_items_settled, credits)
     WHERE c.client_id = $1 AND c.period = r.period
)
INSERT INTO billing.invoices (invoice_id, client_id, period, body, issued_at)
SELECT $3, $1, $2, $13::jsonb, $14 WHERE $3::text IS NOT NULL
"""


async def record_close(conn: Connection, close: Close, issued_at: datetime) -> None:
    """Write what `close_decision.decide_close` decided, in one statement."""
    await conn.execute(
        _RECORD_CLOSE,
        close.client_id,
        close.period,
        None if close.invoice is None else close.invoice.invoice_id,
        close.agreement_version,
        close.tier_name,
        close.tier_reason,
        close.items,
        close.billed_total,
        close.late_items_settled,
        [r.period for r in close.rerates],
        [r.billed_total for r in close.rerates],
        [r.late_items_settled for r in close.rerates],
        None if close.invoice is None else close.invoice.model_dump(mode="json"),
        issued_at,
        close.credits,
        [r.credits for r in close.rerates],
    )


async def invoices(
    conn: Executor,
    *,
    client_id: str | None = None,
    period: str | None = None,
) -> list[Invoice]:
    rows = await conn.fetch(
        """SELECT body FROM billing.invoices
            WHERE ($1::text IS NULL OR client_id = $1) AND ($2::text IS NULL OR period = $2)
            ORDER BY period, client_id, invoice_id""",
        client_id,
        period,
    )
    return [Invoice.model_validate(r["body"]) for r in rows]


async def invoice(conn: Executor, invoice_id: str) -> Invoice | None:
    body = await conn.fetchval(
        "SELECT body FROM billing.invoices WHERE invoice_id = $1", invoice_id
    )
    return None if body is None else Invoice.model_validate(body)


async def unbilled(conn: Executor, period: str, client_id: str | None) -> list[Unbilled]:
    rows = await conn.fetch(
        """SELECT client_id, items FROM billing.closed_periods
            WHERE period = $1 AND invoice_id IS NULL AND ($2::text IS NULL OR client_id = $2)
            ORDER BY client_id""",
        period,
        client_id,
    )
    return [Unbilled(client_id=r["client_id"], items=int(r["items"])) for r in rows]


async def unpublished_invoices(
    conn: Executor, *, exclude: Sequence[str] = (), limit: int = 500
) -> list[tuple[str, Invoice | None]]:
    """The oldest unpublished invoices, but those in `exclude` (held back after a refusal):
    (invoice_id, invoice; None if the stored body is not a valid invoice)."""
    rows = await conn.fetch(
        """SELECT invoice_id, body FROM billing.invoices
            WHERE NOT published AND NOT (invoice_id = ANY($2::text[]))
            ORDER BY issued_at LIMIT $1""",
        limit,
        list(exclude),
    )
    return [(r["invoice_id"], _invoice(r["invoice_id"], r["body"])) for r in rows]


def _invoice(invoice_id: str, body: Any) -> Invoice | None:
    try:
        return Invoice.model_validate(body)
    except ValidationError as error:
        log.error(f"stored invoice {invoice_id!r} is not valid", extra={"error": str(error)[:500]})
        return None


async def mark_invoices_published(conn: Executor, invoice_ids: list[str]) -> None:
    await conn.execute(
        "UPDATE billing.invoices SET published = true WHERE invoice_id = ANY($1::text[])",
        invoice_ids,
    )


async def closed_periods_of(conn: Executor, client_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM billing.closed_periods WHERE client_id = $1 ORDER BY period", client_id
    )


async def billed_periods(
    conn: Executor, client_id: str, periods: Sequence[str]
) -> dict[str, Billed]:
    """The client's closed periods among `periods` (a contract year's, for the forecast): what
    is billed for each so far (None: closed unbilled) and the service credits inside that."""
    rows = await conn.fetch(
        """SELECT period, billed_total, credits FROM billing.closed_periods
            WHERE client_id = $1 AND period = ANY($2::text[])""",
        client_id,
        list(periods),
    )
    return {
        r["period"]: Billed(
            None if r["billed_total"] is None else Decimal(r["billed_total"]),
            Decimal(r["credits"]),
        )
        for r in rows
    }
