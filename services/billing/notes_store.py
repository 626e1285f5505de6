"""Billing's SQL for notes (SPEC §10): issue one (with the period's billed total), list them,
and the outbox that publishes them on `billing.invoices`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.billing.notes import NoteDecision
from shared.contracts.reclassification import Note
from shared.infra.db import Connection, Executor


async def notes_issued(conn: Executor, client_id: str, period: str) -> int:
    """How many notes the period has: the next is k + 1."""
    value: int = await conn.fetchval(
        "SELECT count(*) FROM billing.notes WHERE client_id = $1 AND period = $2",
        client_id,
        period,
    )
    return value


async def record_note(conn: Connection, decision: NoteDecision) -> None:
    """The note, and what the period has billed and settled with it, in one statement."""
    note = decision.note
    await conn.execute(
        """
        WITH billed AS (
            UPDATE billing.closed_periods
               SET billed_total = $7, late_items_settled = $8, credits = $10
             WHERE client_id = $2 AND period = $3
        )
        INSERT INTO billing.notes (note_id, client_id, period, k, reclassification, body,
                                   issued_at)
        VALUES ($1, $2, $3, $4, $5, $6, $9)
        """,
        note.note_id,
        note.client_id,
        note.period,
        decision.k,
        note.reclassification,
        note.model_dump(mode="json"),
        decision.billed_total,
        decision.late_items_settled,
        note.issued_at,
        decision.credits,
    )


async def notes(
    conn: Executor, *, client_id: str | None = None, period: str | None = None
) -> list[Note]:
    """Ordered by client, period, then k (SPEC §13)."""
    rows = await conn.fetch(
        """SELECT body FROM billing.notes
            WHERE ($1::text IS NULL OR client_id = $1) AND ($2::text IS NULL OR period = $2)
            ORDER BY client_id, period, k""",
        client_id,
        period,
    )
    return [Note.model_validate(r["body"]) for r in rows]


async def note(conn: Executor, note_id: str) -> Note | None:
    body = await conn.fetchval("SELECT body FROM billing.notes WHERE note_id = $1", note_id)
    return None if body is None else Note.model_validate(body)


async def unpublished_notes(
    conn: Executor, *, exclude: Sequence[str] = (), limit: int = 500
) -> list[tuple[str, Note | None]]:
    """The oldest unpublished notes but those in `exclude`: (note_id, note; None if the stored
    body is not a valid note)."""
    rows = await conn.fetch(
        """SELECT note_id, body FROM billing.notes
            WHERE NOT published AND NOT (note_id = ANY($2::text[]))
            ORDER BY issued_at, client_id, period, k LIMIT $1""",
        limit,
        list(exclude),
    )
    return [(r["note_id"], _note(r["body"])) for r in rows]


def _note(body: Any) -> Note | None:
    try:
        return Note.model_validate(body)
    except ValueError:
        return None


async def mark_notes_published(conn: Executor, note_ids: list[str]) -> None:
    await conn.execute(
        "UPDATE billing.notes SET published = true WHERE note_id = ANY($1::text[])", note_ids
    )
