"""Issuing the notes reclassifications owe (SPEC §10), one client at a time under its close lock:
read (what is owed, the period as billed, the current agreement, the period's counts) → decide
(`notes.decide_note`, pure) → write (`notes_store.record_note`), note by note in the order the
reclassifications were made, each seeing the one before.

A close of the client issues what is owed first (`closing.close_for_client`), so a close and a
note never bill the same difference twice whichever comes first.
"""

from __future__ import annotations

import logging
from datetime import datetime

from services.billing import notes_store, store
from services.billing.close_decision import PeriodCounts
from services.billing.notes import Owed, decide_note
from shared.contracts.reclassification import Note
from shared.domain.periods import parse_period, period_bounds
from shared.infra.db import Connection
from shared.ledger.reads import counts_between, notes_due
from shared.ledger.service_levels import level_counts

log = logging.getLogger(__name__)


async def issue_due_notes(conn: Connection, client_id: str, now: datetime) -> list[Note]:
    """In the caller's transaction, which holds the client's close lock: every note the client
    is owed, in order."""
    due = await notes_due(conn, client_id)
    if not due:
        return []
    agreement = await store.current_agreement(conn, client_id)
    if agreement is None:  # an invoiced period had one; nothing to rate with otherwise
        log.error("notes owed to a client without an agreement", extra={"client_id": client_id})
        return []
    issued = []
    for owed in due:
        closed = (await store.closed_periods_for_close(conn, client_id))[owed.period]
        bounds = period_bounds(parse_period(owed.period), agreement.timezone)
        counts = await counts_between(conn, client_id, *bounds)
        ledger = PeriodCounts(counts, await level_counts(conn, agreement, *bounds))
        k = await notes_store.notes_issued(conn, client_id, owed.period) + 1
        decision = decide_note(
            due=Owed(
                owed.client_id, owed.reclassification, owed.period, owed.reason, owed.late_delta
            ),
            closed=closed,
            agreement=agreement,
            ledger=ledger,
            k=k,
            now=now,
        )
        await notes_store.record_note(conn, decision)
        issued.append(decision.note)
    return issued
